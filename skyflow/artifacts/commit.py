"""Committing a stage's output (data first, manifest last), reading manifests back, verifying."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from skyflow.artifacts.failures import naming, translated
from skyflow.artifacts.listing import MIN_KEYS_TO_LIST, PrefixListing
from skyflow.artifacts.manifest import (
    ArtifactKind,
    DigestingReader,
    FileEntry,
    Manifest,
    digest_bytes,
    hash_file,
    list_local_files,
)
from skyflow.artifacts.refs import BLOBS, ArtifactRef, blob_key, manifest_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError

# Files up to this size are read once into memory, hashed and uploaded from there; larger ones are
# hashed by streaming and then uploaded from disk (read twice, but never held whole).
INLINE_BYTES = 16 << 20


def commit_output(store: ArtifactStore, local_path: str | Path, *, name: str) -> ArtifactRef:
    """Hash ``local_path`` (a file or directory), upload the blobs the store lacks, then the manifest.

    Hashing and uploading overlap: each file is hashed and, if the store lacks its blob, uploaded
    while the next files are hashed, ``store.workers`` at a time. What the store already has is
    read from one bounded listing of its blobs, taken while the first files hash. The manifest is
    written last, with a conditional create where the store has one: until it lands, the artifact
    does not exist for any reader, so a writer killed mid-upload leaves only unreferenced blobs
    (removed by ``collect_garbage``).
    """
    root = Path(local_path)
    with naming(name):
        files = list_local_files(root)
        uploader = _BlobUploader(store)
        with ThreadPoolExecutor(max_workers=max(1, min(store.workers, len(files)))) as pool:
            if len(files) >= MIN_KEYS_TO_LIST:
                uploader.listing = pool.submit(store.list_prefix, f"{BLOBS}/", wanted_keys=len(files))
            entries = tuple(pool.map(lambda item: uploader.put(*item), files))
        kind: ArtifactKind = "file" if root.is_file() else "dir"
        manifest = Manifest(kind=kind, files=entries)
        store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes(), exclusive=True)
        return ArtifactRef.in_store(store, manifest, name=name)


class _BlobUploader:
    """Hashes one local file and uploads its blob unless the store (or this commit) already has it."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.listing: Future[PrefixListing | None] | None = None
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def put(self, relative: str, path: Path) -> FileEntry:
        with translated(str(path), "reading"):
            size = path.stat().st_size
            data = path.read_bytes() if size <= INLINE_BYTES else None
            digest, size = (digest_bytes(data), len(data)) if data is not None else hash_file(path)
        key = blob_key(digest)
        if self._first_claim(digest) and not self._present(key, size):
            if data is not None:
                self.store.write_bytes(key, data)
            else:
                self.store.upload_files([(path, key)])
        return FileEntry(relative, digest, size)

    def _first_claim(self, digest: str) -> bool:
        """True for the first file of this commit with these bytes (the same bytes upload once)."""
        with self._lock:
            first = digest not in self._claimed
            self._claimed.add(digest)
            return first

    def _present(self, key: str, size: int) -> bool:
        listing = self.listing.result() if self.listing is not None else None
        if listing is not None and listing.settles(key):
            return listing.sizes.get(key) == size
        return self.store.size_of(key) == size


def load_manifest(ref: ArtifactRef) -> Manifest:
    """The ref's manifest, checked against the ref's digest."""
    return read_manifest(ref.store, ref.digest, name=ref.name)


def read_manifest(store: ArtifactStore, digest: str, *, name: str | None = None) -> Manifest:
    key = manifest_key(digest)
    with naming(name):
        data = store.read_optional(key)
        if data is None:
            raise ArtifactError("artifact not found: no manifest with this digest in the store; was it "
                                "committed here, or removed by garbage collection?", uri=store.url(key))
        if digest_bytes(data) != digest:
            raise ArtifactError(f"manifest is corrupted: its bytes hash to {digest_bytes(data)}, "
                                f"not {digest}", uri=store.url(key))
        return Manifest.from_bytes(data, uri=store.url(key))


def find_missing_blobs(store: ArtifactStore, *manifests: Manifest) -> list[str]:
    """Paths of files whose blob is absent or has the wrong size, for one or more manifests checked
    together (a cheap check: one listing of the blobs, or one HEAD each where that is cheaper)."""
    files = [f for manifest in manifests for f in manifest.files]
    wanted = {blob_key(f.digest): f.size_bytes for f in files}
    sizes = store.sizes_of(wanted)
    bad = {key for key, size in wanted.items() if sizes[key] != size}
    return [f.path for f in files if blob_key(f.digest) in bad]


def find_corrupted_blobs(store: ArtifactStore, manifest: Manifest) -> list[str]:
    """Paths of files whose blob is missing or whose bytes no longer hash to the manifest's digest."""
    unique = {f.digest: f for f in manifest.files}

    def is_bad(digest: str) -> bool:
        if store.size_of(blob_key(digest)) is None:
            return True
        reader = DigestingReader(store.read_chunks(blob_key(digest)))
        for _ in reader:
            pass
        return reader.digest != digest or reader.size_bytes != unique[digest].size_bytes

    bad = {d for d, flag in zip(unique, store.map_concurrently(is_bad, list(unique)), strict=True) if flag}
    return [f.path for f in manifest.files if f.digest in bad]


def verify_artifact(ref: ArtifactRef, *, deep: bool = True) -> bool:
    """True if the artifact is whole; raises ArtifactError naming the missing or corrupted files.

    ``deep`` re-reads and re-hashes every blob; without it only presence and sizes are checked.
    """
    manifest = load_manifest(ref)
    bad = find_corrupted_blobs(ref.store, manifest) if deep else find_missing_blobs(ref.store, manifest)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ArtifactError(f"{len(bad)} of {len(manifest.files)} files are missing or corrupted: {shown}; "
                            "commit the output again or transfer it from a store that has it",
                            artifact=ref.name, uri=ref.uri)
    return True
