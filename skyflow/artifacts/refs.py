"""ArtifactRef, TransferStats, and where blobs, manifests and cache entries live inside a store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyflow.artifacts.manifest import HASH_NAME, Manifest, digest_hex
from skyflow.artifacts.record import ArtifactRecord
from skyflow.artifacts.store import ArtifactStore, open_store
from skyflow.errors import ArtifactError

BLOBS = f"blobs/{HASH_NAME}"
MANIFESTS = f"manifests/{HASH_NAME}"
CACHE = "cache"
TMP = "tmp"
# Objects found damaged (a blob or manifest that does not hash to its name, a cache entry filed under
# another key) are moved here, never deleted: gc leaves this folder alone, so they can be looked at.
QUARANTINE = "quarantine"


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
    """A committed artifact with its store open: the record's fields, plus the store to read it from."""

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

    @property
    def record(self) -> ArtifactRecord:
        return ArtifactRecord(name=self.name, uri=self.uri, digest=self.digest, size_bytes=self.size_bytes,
                              store_uri=self.store.uri, file_count=self.file_count)

    @classmethod
    def open(cls, record: ArtifactRecord, *, store: ArtifactStore | None = None,
             storage_options: dict[str, Any] | None = None) -> ArtifactRef:
        """The record with its store opened (``store`` when given and it is the record's store)."""
        if record.store_uri is None:
            raise ArtifactError("this artifact is not in a store", artifact=record.name, uri=record.uri)
        if store is None or store.uri.rstrip("/") != record.store_uri.rstrip("/"):
            store = open_store(record.store_uri, storage_options)
        return cls(name=record.name, uri=record.uri, digest=record.digest, size_bytes=record.size_bytes or 0,
                   file_count=record.file_count or 0, store=store)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run state and lineage; ``from_dict`` opens the store again."""
        return self.record.to_json()

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, store: ArtifactStore | None = None,
                  storage_options: dict[str, Any] | None = None) -> ArtifactRef:
        return cls.open(ArtifactRecord.from_json(data), store=store, storage_options=storage_options)


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
