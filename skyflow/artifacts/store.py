"""ArtifactStore: the few storage operations artifacts need, over fsspec (local, S3, GCS, Azure)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from skyflow.artifacts.failures import translated
from skyflow.artifacts.listing import MIN_KEYS_TO_LIST, PrefixListing, list_sizes, listing_budget
from skyflow.artifacts.manifest import CHUNK_BYTES
from skyflow.errors import ArtifactError

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_WORKERS = 16
_PROTOCOLS = {"": "file", "file": "file", "local": "file", "s3": "s3", "s3a": "s3", "gs": "gcs",
              "gcs": "gcs", "az": "abfs", "abfs": "abfs", "abfss": "abfs", "memory": "memory"}


@dataclass(frozen=True)
class KeyInfo:
    """What a listing says about one stored object."""

    size_bytes: int
    modified_s: float | None


@runtime_checkable
class ArtifactStore(Protocol):
    """Keys under one root. Writes are atomic: an object is visible whole or not at all."""

    workers: int  # how many requests the store's callers keep in flight
    is_local: bool  # a directory on this machine: writes are renames, modification times can be refreshed

    @property
    def uri(self) -> str: ...
    def url(self, key: str) -> str: ...
    def size_of(self, key: str) -> int | None: ...
    def sizes_of(self, keys: Iterable[str]) -> dict[str, int | None]: ...
    def list_prefix(self, prefix: str, *, wanted_keys: int) -> PrefixListing | None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def read_optional(self, key: str) -> bytes | None: ...
    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> bool: ...
    def upload_files(self, pairs: list[tuple[Path, str]]) -> None: ...
    def read_chunks(self, key: str) -> Iterator[bytes]: ...
    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> None: ...
    def stage_chunks(self, chunks: Iterable[bytes]) -> str: ...
    def move(self, src: str, dst: str) -> bool: ...
    def touch(self, keys: Iterable[str]) -> bool: ...
    def list_keys(self, prefix: str) -> dict[str, KeyInfo]: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def map_concurrently(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]: ...


class FsspecStore:
    """An ArtifactStore on any fsspec filesystem; local writes go through a temp file and a rename."""

    def __init__(self, fs: Any, root: str, uri: str, *, workers: int = DEFAULT_WORKERS) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self._uri = uri.rstrip("/")
        self.workers = workers
        self.protocol = _protocol_of(fs)
        self.is_local = self.protocol == "file"

    def __repr__(self) -> str:
        return f"FsspecStore({self._uri!r})"

    @property
    def uri(self) -> str:
        return self._uri

    def url(self, key: str) -> str:
        return f"{self._uri}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def size_of(self, key: str) -> int | None:
        with translated(self.url(key), "looking up"):
            try:
                return int(self.fs.info(self._path(key))["size"])
            except FileNotFoundError:
                return None

    def sizes_of(self, keys: Iterable[str]) -> dict[str, int | None]:
        """Sizes (None: absent) of many keys: one bounded listing of their common prefix where the
        store lists in order and that is cheaper, then a HEAD for each key the listing left open."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, int | None] = {}
        if len(keys) >= MIN_KEYS_TO_LIST:
            listing = self.list_prefix(_common_prefix(keys), wanted_keys=len(keys))
            if listing is not None:
                found = {k: listing.sizes.get(k) for k in keys if listing.settles(k)}
        rest = [k for k in keys if k not in found]
        return found | dict(zip(rest, self.map_concurrently(self.size_of, rest), strict=True))

    def list_prefix(self, prefix: str, *, wanted_keys: int) -> PrefixListing | None:
        """Keys and sizes under ``prefix``, read in pages until a budget set by ``wanted_keys``;
        None where the store has no ordered paged listing (then a HEAD per key is the way)."""
        with translated(self.url(prefix), "listing"):
            listed = list_sizes(self.fs, self.protocol, self._path(prefix), listing_budget(wanted_keys))
        if listed is None:
            return None
        sizes, through = listed
        skip = len(self.root) + 1
        return PrefixListing(prefix, {path[skip:]: size for path, size in sizes.items()},
                             through[skip:] if through is not None else None)

    def read_bytes(self, key: str) -> bytes:
        with translated(self.url(key), "reading"):
            return bytes(self.fs.cat_file(self._path(key)))

    def read_optional(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object (one request, not HEAD + GET)."""
        with translated(self.url(key), "reading"):
            try:
                return bytes(self.fs.cat_file(self._path(key)))
            except FileNotFoundError:
                return None

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Write an object; with ``exclusive``, a conditional create that returns False if it existed."""
        with translated(self.url(key), "writing"):
            if self.is_local:
                return self._write_local(key, lambda f: f.write(data), exclusive=exclusive)
            try:
                self.fs.pipe_file(self._path(key), data, mode="create" if exclusive else "overwrite")
            except FileExistsError:
                return False
            return True

    def upload_files(self, pairs: list[tuple[Path, str]]) -> None:
        """Upload local files, many at a time; each lands whole or not at all."""
        if not pairs:
            return
        with translated(self.url(pairs[0][1]), f"uploading {len(pairs)} files starting with"):
            if self.is_local:
                def copy(pair: tuple[Path, str]) -> None:
                    with open(pair[0], "rb") as src:
                        self._write_local(pair[1], lambda f: shutil.copyfileobj(src, f, CHUNK_BYTES))
                self.map_concurrently(copy, pairs)
            else:
                self.fs.put([str(p) for p, _ in pairs], [self._path(k) for _, k in pairs])

    def read_chunks(self, key: str) -> Iterator[bytes]:
        with translated(self.url(key), "reading"), self.fs.open(self._path(key), "rb",
                                                               block_size=CHUNK_BYTES) as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> None:
        """Stream an object in; if ``chunks`` raises (say, a digest mismatch), nothing is committed."""
        with translated(self.url(key), "writing"):
            if self.is_local:
                self._write_local(key, lambda f: [f.write(c) for c in chunks])
                return
            f = self.fs.open(self._path(key), "wb", block_size=CHUNK_BYTES)
            try:
                for chunk in chunks:
                    f.write(chunk)
            except BaseException:
                f.discard()  # aborts the multipart / resumable upload where the store has one
                with contextlib.suppress(AttributeError):  # fsspec's MemoryFile (a BytesIO) cannot be marked
                    f.closed = True  # so that no close() commits what was buffered
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self._path(key))
                raise
            f.close()

    def stage_chunks(self, chunks: Iterable[bytes]) -> str:
        """Write an object under a fresh key in tmp/ and return that key: for bytes whose name (their
        digest) is known only once they have been read. `move` then puts it under its name."""
        key = f"tmp/{uuid.uuid4().hex}.staged"
        self.write_chunks(key, chunks)
        return key

    def move(self, src: str, dst: str) -> bool:
        """Move an object to another key (a rename on local disk, copy then delete elsewhere);
        False when there was nothing at ``src``."""
        with translated(self.url(src), "moving"):
            if self.is_local:
                Path(self._path(dst)).parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(self._path(src), self._path(dst))
                except FileNotFoundError:
                    return False
                return True
            try:
                self.fs.cp_file(self._path(src), self._path(dst))
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(src))
            return True

    def touch(self, keys: Iterable[str]) -> bool:
        """Refresh the objects' modification times, so that gc's min-age spares what a commit reuses.
        Only local disk can do that cheaply (an object store would rewrite the object): False there."""
        if not self.is_local:
            return False
        with translated(self.uri, "refreshing"):
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self._path(key))
        return True

    def list_keys(self, prefix: str) -> dict[str, KeyInfo]:
        base = self._path(prefix.rstrip("/"))
        with translated(self.url(prefix), "listing"):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
        skip = len(self.root) + 1
        return {path[skip:]: KeyInfo(int(info.get("size") or 0), _modified_s(info))
                for path, info in found.items() if info.get("type", "file") != "directory"}

    def delete(self, keys: Iterable[str]) -> None:
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        with translated(self.url(paths[0][len(self.root) + 1:]), f"deleting {len(paths)} objects from"):
            if self.is_local:
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            else:
                try:
                    self.fs.rm(paths)
                except FileNotFoundError:  # some backends refuse a batch naming a missing object
                    for path in paths:
                        with contextlib.suppress(FileNotFoundError):
                            self.fs.rm_file(path)

    def map_concurrently(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Run ``fn`` over ``items`` on ``workers`` threads (each fsspec call waits on network I/O)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _write_local(self, key: str, write: Callable[[Any], object], *, exclusive: bool = False) -> bool:
        """Write to a temp file beside the store, then rename (or hard-link, for exclusive) into place."""
        final = Path(self._path(key))
        tmp_dir = Path(self.root) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if not exclusive:
                os.replace(tmp, final)
                return True
            try:
                os.link(tmp, final)  # fails if the target exists: a local conditional create
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _common_prefix(keys: list[str]) -> str:
    """The longest whole-folder prefix shared by ``keys`` ("blobs/sha256/" for a set of blobs)."""
    parents = [key.rpartition("/")[0] for key in keys]
    shared = posixpath.commonpath(parents) if all(parents) else ""
    return f"{shared}/" if shared else ""


def _protocol_of(fs: Any) -> str:
    """The filesystem's protocol in open_store's terms ("gcs" for gcsfs's ("gs", "gcs"), ...)."""
    protocol = fs.protocol
    name = protocol if isinstance(protocol, str) else protocol[0]
    return _PROTOCOLS.get(name, name)


def _modified_s(info: dict[str, Any]) -> float | None:
    """Modification time from whichever key this backend uses (mtime, LastModified, updated, ...)."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _default_options(protocol: str) -> dict[str, Any]:
    """Retries with backoff come from each library; these only set them and keep listings fresh."""
    if protocol == "s3":
        options: dict[str, Any] = {"config_kwargs": {"retries": {"max_attempts": 5, "mode": "standard"},
                                                     "connect_timeout": 5, "read_timeout": 60}}
        return options | {"use_listings_cache": False}
    if protocol == "gcs":
        return {"use_listings_cache": False} | (
            {"token": "anon"} if os.environ.get("STORAGE_EMULATOR_HOST") else {})
    if protocol == "abfs":
        return {"use_listings_cache": False}
    if protocol == "file":
        return {"auto_mkdir": True}
    return {}


def open_store(uri: str, storage_options: dict[str, Any] | None = None, *, create: bool = False,
               region: str | None = None, workers: int = DEFAULT_WORKERS) -> FsspecStore:
    """A store at a local path, ``s3://bucket/prefix``, ``gs://...``, ``az://container/prefix``.

    Endpoints come from ``storage_options`` or the libraries' own environment variables
    (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST, AZURE_STORAGE_CONNECTION_STRING). A missing bucket is
    created in ``region`` only when ``create`` is true; otherwise it is an error.
    """
    import fsspec

    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    protocol = _PROTOCOLS.get(scheme.lower())
    if protocol is None:
        raise ArtifactError(f"unknown store scheme {scheme!r}; use a local path, s3://, gs:// or az://",
                            uri=uri)
    if protocol == "file":
        rest = os.path.abspath(os.path.expanduser(rest))
        uri = rest
    with translated(uri, "opening the store"):
        fs = fsspec.filesystem(protocol, **(_default_options(protocol) | (storage_options or {})))
    root = rest if protocol == "file" else fs._strip_protocol(uri)
    store = FsspecStore(fs, root, uri, workers=workers)
    _ensure_bucket(store, protocol, create=create, region=region)
    return store


def _ensure_bucket(store: FsspecStore, protocol: str, *, create: bool, region: str | None) -> None:
    if protocol == "memory":
        return
    if protocol == "file":
        with translated(store.uri, "creating the store directory"):
            Path(store.root).mkdir(parents=True, exist_ok=True)
        return
    bucket = store.root.split("/", 1)[0]
    with translated(store.uri, "checking the bucket"):
        try:  # not fs.exists(): it answers False when the store cannot be reached at all
            store.fs.info(bucket)
            return
        except FileNotFoundError:
            pass
        if not create:
            raise ArtifactError(f"bucket {bucket!r} does not exist; create it, or set create: true on the "
                                "store to let skyflow create it", uri=store.uri)
        if protocol == "s3":
            # us-east-1 is S3's default and must not be named as a LocationConstraint.
            where = {"CreateBucketConfiguration": {"LocationConstraint": region}} \
                if region and region != "us-east-1" else {}
            store.fs.call_s3("create_bucket", Bucket=bucket, **where)
        else:
            store.fs.mkdir(bucket, create_parents=True, **({"location": region} if region else {}))
