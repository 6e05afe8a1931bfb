"""Copying an artifact between stores: parallel, streaming, resumable file by file, verified."""

from __future__ import annotations

import time
from collections.abc import Iterator

from skyflow.artifacts.commit import load_manifest, write_manifest
from skyflow.artifacts.failures import naming
from skyflow.artifacts.integrity import DamagedArtifact, quarantine_blob
from skyflow.artifacts.manifest import DigestingReader, FileEntry, digest_bytes
from skyflow.artifacts.progress import expect_bytes, moved_bytes
from skyflow.artifacts.refs import ArtifactRef, TransferStats, blob_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError

# Files up to this size move in one GET and one PUT, checked in memory before the PUT; larger ones
# stream in chunks and are checked as they pass.
WHOLE_FILE_BYTES = 64 << 20


def transfer_artifact(ref: ArtifactRef, target: ArtifactStore) -> tuple[ArtifactRef, TransferStats]:
    """Copy the artifact's blobs the target lacks, then its manifest. Blobs already in the target
    (same size) are skipped, so an interrupted transfer resumes where it stopped."""
    if target.uri == ref.store.uri:
        return ref, TransferStats(bytes=0, seconds=0.0)
    started = time.perf_counter()
    with naming(ref.name):
        manifest = load_manifest(ref)
        unique = list({f.digest: f for f in manifest.files}.values())
        present = target.sizes_of(blob_key(f.digest) for f in unique)
        todo = [f for f in unique if present[blob_key(f.digest)] != f.size_bytes]
        expect_bytes(sum(f.size_bytes for f in todo))
        target.map_concurrently(lambda entry: _copy_blob(ref, target, entry), todo)
        write_manifest(target, manifest)
    moved = sum(f.size_bytes for f in todo)
    stats = TransferStats(bytes=moved, seconds=time.perf_counter() - started, files_copied=len(todo),
                          files_skipped=len(unique) - len(todo))
    return ArtifactRef.in_store(target, manifest, name=ref.name), stats


def _copy_blob(ref: ArtifactRef, target: ArtifactStore, entry: FileEntry) -> None:
    source, key = ref.store, blob_key(entry.digest)
    try:
        if entry.size_bytes <= WHOLE_FILE_BYTES:
            data = source.read_bytes(key)
            if digest_bytes(data) != entry.digest or len(data) != entry.size_bytes:
                raise _corrupted(ref, entry, digest_bytes(data), len(data))
            target.write_bytes(key, data)
            moved_bytes(len(data))
        else:
            target.write_chunks(key, _checked(ref, entry, DigestingReader(source.read_chunks(key))))
    except DamagedArtifact:
        raise
    except ArtifactError as exc:
        if isinstance(exc.__cause__, FileNotFoundError) and exc.uri == source.url(key):
            raise DamagedArtifact(f"source blob for {entry.path!r} is missing; nothing was copied for it",
                                  uri=source.url(key), digest=ref.digest) from exc
        raise


def _checked(ref: ArtifactRef, entry: FileEntry, reader: DigestingReader) -> Iterator[bytes]:
    """Yield the chunks, then fail before the writer commits if they were not the expected bytes."""
    for chunk in reader:
        moved_bytes(len(chunk))
        yield chunk
    if reader.digest != entry.digest or reader.size_bytes != entry.size_bytes:
        raise _corrupted(ref, entry, reader.digest, reader.size_bytes)


def _corrupted(ref: ArtifactRef, entry: FileEntry, digest: str, size: int) -> DamagedArtifact:
    """The error for a source blob that read as other bytes; a fresh read must agree before it is quarantined."""
    moved = quarantine_blob(ref.store, entry.digest, entry.size_bytes)
    where = f"; moved to {ref.store.url(moved)}" if moved else ""
    return DamagedArtifact(f"source blob for {entry.path!r} is corrupted ({size} bytes hashing to {digest}; "
                           f"the manifest says {entry.size_bytes} bytes, {entry.digest}); nothing was "
                           f"copied for it{where}", uri=ref.store.url(blob_key(entry.digest)), digest=ref.digest,
                           quarantined=[moved] if moved else [])
