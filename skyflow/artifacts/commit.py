"""Committing a stage's output (data first, manifest last), reading manifests back, verifying."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from skyflow.artifacts.failures import naming, translated
from skyflow.artifacts.integrity import DamagedArtifact, check_blobs, quarantine
from skyflow.artifacts.listing import MIN_KEYS_TO_LIST, PrefixListing
from skyflow.artifacts.manifest import (
    ArtifactKind,
    DigestingReader,
    FileEntry,
    Manifest,
    digest_bytes,
    file_chunks,
    hash_file,
    list_local_files,
)
from skyflow.artifacts.refs import BLOBS, ArtifactRef, blob_key, manifest_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError

# Files up to this size are read once into memory, hashed and uploaded from there; larger ones are
# streamed (never held whole).
INLINE_BYTES = 16 << 20


def commit_output(store: ArtifactStore, local_path: str | Path, *, name: str, confined: bool = False) -> ArtifactRef:
    """Hash ``local_path`` (a file or directory), upload the blobs the store lacks, then the manifest.

    ``confined`` for a stage's output: the directory may not be a symlink, nor hold hard links to
    files outside it (see `list_local_files`); data the user points at is committed as it is.

    Hashing and uploading overlap: each file is hashed and, if the store lacks its blob, uploaded
    while the next files are hashed, ``store.workers`` at a time. What the store already has is
    read from one bounded listing of its blobs, taken while the first files hash. Every blob is
    named by the digest of the very bytes stored: files up to 16 MiB are read once, hashed and
    uploaded from memory; larger ones are hashed (to skip blobs the store has), then copied to a
    local store in one pass that hashes what it writes and names the blob by that digest, or
    uploaded to an object store hashed as they go, the upload aborted if the bytes changed since
    (then they are stored by the one-pass way). A small blob already on local disk is compared
    byte for byte and rewritten if it differs; elsewhere a blob of the right size is reused (its
    bytes are verified when a stage fetches it).
    The manifest is written last, with a conditional create where the store has one: until it
    lands, the artifact does not exist for any reader, so a writer killed mid-upload leaves only
    unreferenced blobs (removed by ``collect_garbage``). Blobs reused from the store are checked
    again once the manifest names them (a gc may have removed them meanwhile) and put back if gone.
    """
    root = Path(local_path)
    with naming(name):
        files = list_local_files(root, confined=confined)
        uploader = _BlobUploader(store)
        with ThreadPoolExecutor(max_workers=max(1, min(store.workers, len(files)))) as pool:
            if len(files) >= MIN_KEYS_TO_LIST and not store.is_local:
                uploader.listing = pool.submit(store.list_prefix, f"{BLOBS}/", wanted_keys=len(files))
            entries = tuple(pool.map(lambda item: uploader.put_unless_failed(*item), files))
        kind: ArtifactKind = "file" if root.is_file() else "dir"
        manifest = Manifest(kind=kind, files=entries)
        write_manifest(store, manifest)
        uploader.put_back_removed()
        return ArtifactRef.in_store(store, manifest, name=name)


def write_manifest(store: ArtifactStore, manifest: Manifest) -> None:
    """Create the manifest; one already there is kept only if it holds exactly these bytes (its name
    fixes its content), else it is quarantined and replaced."""
    key, data = manifest_key(manifest.digest), manifest.to_bytes()
    if store.write_bytes(key, data, exclusive=True):
        return
    existing = store.read_optional(key)
    if existing == data:
        store.touch([key])  # reused: a gc running now must see it as young
        return
    if existing is not None:
        quarantine(store, key)
    store.write_bytes(key, data)


class _FileChanged(Exception):
    """A file's bytes differed between hashing it and uploading it."""


class _GivenUp(Exception):
    """A file not tried because another file of the commit failed first (that failure is raised)."""


class _BlobUploader:
    """Stores one local file's blob unless the store (or this commit) already has it."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.listing: Future[PrefixListing | None] | None = None
        self._claimed: set[str] = set()
        # Blobs the store already had: blob key -> (a local file with those bytes, digest, size).
        self._reused: dict[str, tuple[Path, str, int]] = {}
        self._lock = threading.Lock()
        self._failed = threading.Event()

    def put_unless_failed(self, relative: str, path: Path) -> FileEntry:
        """`put`, unless a file of this commit has failed already: files are started in order, so the
        first failure in order is a real one, and against a store that is down no further file waits
        out its own retries. Files already in flight finish."""
        if self._failed.is_set():
            raise _GivenUp(relative)
        try:
            return self.put(relative, path)
        except BaseException:
            self._failed.set()
            raise

    def put(self, relative: str, path: Path) -> FileEntry:
        with translated(str(path), "reading"):
            data = path.read_bytes() if path.stat().st_size <= INLINE_BYTES else None
        if data is not None:
            digest, size = digest_bytes(data), len(data)
            if self._first_claim(digest):
                self._put_inline(path, data, digest)
        else:
            digest, size = self._put_large(path)
        return FileEntry(relative, digest, size)

    def _put_inline(self, path: Path, data: bytes, digest: str) -> None:
        key = blob_key(digest)
        if self.store.is_local:
            # A local copy of the same size is compared, not trusted: a damaged one is replaced.
            if self.store.size_of(key) == len(data) and self.store.read_optional(key) == data:
                self._reuse(key, path, digest, len(data))
                return
        elif self._present(key, len(data)):
            self._reuse(key, path, digest, len(data))
            return
        self.store.write_bytes(key, data)

    def _put_streaming(self, path: Path) -> tuple[str, int]:
        """One pass: the bytes are hashed as they are written, and named by that digest."""
        reader = DigestingReader(file_chunks(path))
        staged = self.store.stage_chunks(reader)
        self.store.move(staged, blob_key(reader.digest))
        return reader.digest, reader.size_bytes

    def _put_large(self, path: Path) -> tuple[str, int]:
        """Hash first (to skip blobs the store has), then copy: to local disk in one pass, named by the
        bytes copied; to an object store checking the bytes as they upload."""
        with translated(str(path), "reading"):
            digest, size = hash_file(path)
        key = blob_key(digest)
        if not self._first_claim(digest):
            return digest, size
        if self._present(key, size):
            self._reuse(key, path, digest, size)
            return digest, size
        if self.store.is_local:
            return self._put_streaming(path)
        try:
            self._upload_checked(path, key, digest, size)
        except _FileChanged:
            # Something (a process the stage left behind) is still writing the file: store what one
            # more read gives, named by exactly those bytes.
            return self._put_streaming(path)
        return digest, size

    def _upload_checked(self, path: Path, key: str, digest: str, size: int) -> None:
        def checked() -> Iterator[bytes]:
            reader = DigestingReader(file_chunks(path))
            yield from reader
            if (reader.digest, reader.size_bytes) != (digest, size):
                raise _FileChanged(path)  # raised before the writer commits: nothing lands under ``key``

        self.store.write_chunks(key, checked())

    def _reuse(self, key: str, path: Path, digest: str, size: int) -> None:
        self.store.touch([key])  # a gc running now must see it as young
        with self._lock:
            self._reused[key] = (path, digest, size)

    def put_back_removed(self) -> None:
        """Once the manifest is written: a reused blob that is gone now (a gc that listed the store
        before this manifest existed) is uploaded again from the local file."""
        if not self._reused:
            return
        sizes = self.store.sizes_of(self._reused)
        for key, (path, digest, size) in self._reused.items():
            if sizes[key] == size:
                continue
            try:
                self._upload_checked(path, key, digest, size)
            except _FileChanged:
                raise ArtifactError("the file changed while it was being committed and its stored copy was "
                                    "removed meanwhile; a process of the stage may still be writing it",
                                    uri=str(path)) from None

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
    """The manifest named ``digest``; DamagedArtifact when it is missing or its bytes hash to another
    digest (then it is quarantined, once a second read agrees)."""
    key = manifest_key(digest)
    with naming(name):
        data = store.read_optional(key)
        if data is None:
            raise DamagedArtifact("artifact not found: no manifest with this digest in the store; was it "
                                  "committed here, or removed by garbage collection?", uri=store.url(key),
                                  digest=digest)
        if digest_bytes(data) != digest:
            again = store.read_optional(key)
            if again is None or digest_bytes(again) != digest:
                moved = quarantine(store, key)
                where = f"; moved to {store.url(moved)}" if moved else ""
                raise DamagedArtifact(f"manifest is corrupted: its bytes hash to {digest_bytes(data)}, not "
                                      f"{digest}{where}", uri=store.url(key), digest=digest,
                                      quarantined=[moved] if moved else [])
            data = again
        return Manifest.from_bytes(data, uri=store.url(key))


def find_missing_blobs(store: ArtifactStore, *manifests: Manifest) -> list[str]:
    """Paths of files whose blob is absent or has the wrong size, for one or more manifests checked
    together (a cheap check: one listing of the blobs, or one HEAD each where that is cheaper).
    Blobs of the wrong size are quarantined."""
    return list(check_blobs(store, manifests, rehash=False).bad_paths)


def find_corrupted_blobs(store: ArtifactStore, manifest: Manifest) -> list[str]:
    """Paths of files whose blob is missing or whose bytes no longer hash to the manifest's digest
    (those blobs are quarantined)."""
    return list(check_blobs(store, [manifest], rehash=True).bad_paths)


def verify_artifact(ref: ArtifactRef, *, deep: bool = True) -> bool:
    """True if the artifact is whole; raises DamagedArtifact naming the missing or corrupted files.

    ``deep`` re-reads and re-hashes every blob; without it only presence and sizes are checked.
    What is found damaged is quarantined.
    """
    manifest = load_manifest(ref)
    check = check_blobs(ref.store, [manifest], rehash=deep)
    bad = check.bad_paths
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        moved = f" (damaged blobs moved to {ref.store.url('quarantine')}/)" if check.quarantined else ""
        raise DamagedArtifact(f"{len(bad)} of {len(manifest.files)} files are missing or corrupted: {shown}{moved}; "
                              "commit the output again or transfer it from a store that has it",
                              artifact=ref.name, uri=ref.uri, digest=ref.digest, quarantined=check.quarantined)
    return True
