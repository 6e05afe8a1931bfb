"""ArtifactRef, TransferStats, and where blobs, manifests and cache entries live inside a store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyflow.artifacts.manifest import HASH_NAME, Manifest, digest_hex
from skyflow.artifacts.store import ArtifactStore, open_store
from skyflow.errors import ArtifactError

BLOBS = f"blobs/{HASH_NAME}"
MANIFESTS = f"manifests/{HASH_NAME}"
CACHE = "cache"
TMP = "tmp"


def blob_key(digest: str) -> str:
    """Content-addressed: the same bytes are stored once, under their digest."""
    hexpart = digest_hex(digest)
    return f"{BLOBS}/{hexpart[:2]}/{hexpart}"


def manifest_key(digest: str) -> str:
    return f"{MANIFESTS}/{digest_hex(digest)}.json"


def digest_of_manifest_key(key: str) -> str:
    return f"{HASH_NAME}:{key.rsplit('/', 1)[-1].removesuffix('.json')}"


def digest_of_blob_key(key: str) -> str:
    return f"{HASH_NAME}:{key.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class ArtifactRef:
    """A committed artifact: its manifest's URI and digest, total size and file count, and its store."""

    name: str
    uri: str
    digest: str
    size_bytes: int
    file_count: int
    store: ArtifactStore = field(compare=False, repr=False)

    @classmethod
    def in_store(cls, store: ArtifactStore, manifest: Manifest, *, name: str) -> ArtifactRef:
        digest = manifest.digest
        return cls(name=name, uri=store.url(manifest_key(digest)), digest=digest,
                   size_bytes=manifest.size_bytes, file_count=len(manifest.files), store=store)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run state and lineage; ``from_dict`` opens the store again."""
        return {"name": self.name, "uri": self.uri, "digest": self.digest, "size_bytes": self.size_bytes,
                "file_count": self.file_count, "store_uri": self.store.uri}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, store: ArtifactStore | None = None,
                  storage_options: dict[str, Any] | None = None) -> ArtifactRef:
        try:
            store = store or open_store(str(data["store_uri"]), storage_options)
            return cls(name=str(data["name"]), uri=str(data["uri"]), digest=str(data["digest"]),
                       size_bytes=int(data["size_bytes"]), file_count=int(data["file_count"]), store=store)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"not an artifact reference: {data!r} ({exc})") from exc


@dataclass(frozen=True)
class TransferStats:
    """Bytes moved and seconds spent by one transfer (recorded for lineage and size learning)."""

    bytes: int
    seconds: float
    files_copied: int = 0
    files_skipped: int = 0

    @property
    def throughput_mb_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
