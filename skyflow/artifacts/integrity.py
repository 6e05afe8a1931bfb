"""Damage in a store: the error that names it, quarantine (the bad object moved aside), and blob checks.

A blob or manifest is damaged when it is missing or its bytes do not hash to the digest that names it.
Whoever finds such an object moves it under ``quarantine/`` (never deletes it): the next commit of the
same bytes then finds the name free and writes it afresh, and a lookup can never again take the bad
copy for a good one. Before moving anything, the object is read once more: a copy that a concurrent
commit has just rewritten is left alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from skyflow.artifacts.manifest import DigestingReader, Manifest
from skyflow.artifacts.refs import QUARANTINE, blob_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError

__all__ = ["BlobCheck", "DamagedArtifact", "check_blobs", "quarantine", "quarantine_blob", "rehash_blob"]


class DamagedArtifact(ArtifactError):
    """An artifact's manifest or a blob is missing, or does not hash to its name.

    ``quarantined`` lists where the bad objects were moved (empty when they were simply absent);
    ``digest`` is the artifact's, when known. A run heals by running the producer again.
    """

    def __init__(self, message: str, *, artifact: str | None = None, uri: str | None = None,
                 digest: str | None = None, quarantined: Iterable[str] = ()) -> None:
        super().__init__(message, artifact=artifact, uri=uri)
        self.digest = digest
        self.quarantined = tuple(quarantined)


def quarantine(store: ArtifactStore, key: str) -> str | None:
    """Move ``key`` to ``quarantine/<key>.<UTC time>-<id>``; the new key, or None when it was gone."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{QUARANTINE}/{key}.{stamp}-{uuid.uuid4().hex[:6]}"
    return target if store.move(key, target) else None


def rehash_blob(store: ArtifactStore, digest: str) -> tuple[str, int] | None:
    """(digest, size) of the bytes the store holds under ``digest``'s blob key; None when absent."""
    try:
        reader = DigestingReader(store.read_chunks(blob_key(digest)))
        for _ in reader:
            pass
    except ArtifactError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise
    return reader.digest, reader.size_bytes


def quarantine_blob(store: ArtifactStore, digest: str, size_bytes: int) -> str | None:
    """Quarantine the blob of ``digest`` if a fresh read confirms it is bad; where it went, else None."""
    found = rehash_blob(store, digest)
    if found is None or found == (digest, size_bytes):
        return None
    return quarantine(store, blob_key(digest))


@dataclass(frozen=True)
class BlobCheck:
    """What checking the blobs of some manifests found."""

    bad_paths: tuple[str, ...]  # files whose blob is absent or damaged
    bad_digests: frozenset[str]
    quarantined: tuple[str, ...]  # where damaged blobs were moved
    blobs: int  # distinct blobs checked
    total_bytes: int
    rehashed: bool  # re-read and re-hashed (else: presence and sizes only)

    def describe(self) -> str:
        mb = self.total_bytes / 1e6
        what = "re-hashed" if self.rehashed else "present at their sizes (not re-read)"
        return f"{self.blobs} blob{'s' if self.blobs != 1 else ''} ({mb:.1f} MB) {what}"


def check_blobs(store: ArtifactStore, manifests: Iterable[Manifest], *, rehash: bool) -> BlobCheck:
    """Check every blob the manifests list, in one presence check (and, with ``rehash``, one read
    each); blobs of the wrong size or bytes are quarantined."""
    files = [f for manifest in manifests for f in manifest.files]
    unique = {f.digest: f.size_bytes for f in files}
    sizes = store.sizes_of(blob_key(d) for d in unique)
    absent = {d for d in unique if sizes[blob_key(d)] is None}
    wrong = {d for d, size in unique.items() if d not in absent and sizes[blob_key(d)] != size}
    if rehash:
        todo = [d for d in unique if d not in absent and d not in wrong]
        for digest, found in zip(todo, store.map_concurrently(lambda d: rehash_blob(store, d), todo), strict=True):
            if found is None:
                absent.add(digest)
            elif found != (digest, unique[digest]):
                wrong.add(digest)
    moved = [q for d in sorted(wrong) if (q := quarantine_blob(store, d, unique[d])) is not None]
    bad = absent | wrong
    return BlobCheck(bad_paths=tuple(f.path for f in files if f.digest in bad), bad_digests=frozenset(bad),
                     quarantined=tuple(moved),
                     blobs=len(unique), total_bytes=sum(unique.values()), rehashed=rehash)
