"""Fingerprints of watched inputs through fsspec: metadata first, content only when it moved.

Whatever a storage library raises (no credentials, a bucket that does not exist, a dead endpoint)
becomes a SchedulerError naming the input: a watched input that cannot be read is a warning for the
scheduler and for `schedule add`, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from skyflow.errors import SchedulerError
from skyflow.scheduler.decisions import MISSING, Fingerprint, needs_digest

# Per-object fields that change whenever the bytes do, in order of trust: a store's ETag or
# generation, else modification time with size (and inode, which an atomic replace changes).
_VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "content_md5", "VersionId")
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "mtime_ns", "created")


def _unreadable(uri: str, action: str, exc: Exception) -> SchedulerError:
    return SchedulerError(f"cannot {action} {uri}: {type(exc).__name__}: {exc}; check the credentials and the "
                          "location (`skyflow check`)")


def _fs(uri: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise SchedulerError(f"cannot watch {uri}: {exc}") from exc
    except Exception as exc:  # the storage library's own errors, raised when it sets up a client
        raise _unreadable(uri, "watch", exc) from exc
    # Object-store listings are cached per filesystem instance; a stale cache would hide changes.
    fs.invalidate_cache()
    return fs, path


def _object_token(info: dict[str, Any]) -> str:
    for key in _VERSION_KEYS:
        if info.get(key):
            return f"{key}={info[key]}"
    stamp = next((info[k] for k in _TIME_KEYS if info.get(k) is not None), None)
    return f"t={stamp};size={info.get('size')};ino={info.get('ino', '')}"


def probe_meta(uri: str) -> str:
    """A cheap token that changes when ``uri`` (a file, object, directory or prefix) changes."""
    fs, path = _fs(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return MISSING
    except Exception as exc:  # OSError, or the storage library's own (botocore's NoCredentialsError)
        raise _unreadable(uri, "read metadata of", exc) from exc
    if info.get("type") != "directory":
        return _object_token(info)
    try:
        entries = fs.find(path, detail=True)
    except Exception as exc:
        raise _unreadable(uri, "list", exc) from exc
    base = path.rstrip("/")
    listing = sorted((name[len(base):], _object_token(e)) for name, e in entries.items()
                     if e.get("type") != "directory")
    return "dir:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def content_digest(uri: str) -> str:
    """sha256 over the bytes (for a directory: over each file's relative path and digest)."""
    fs, path = _fs(uri)
    try:
        if not fs.isdir(path):
            return _file_digest(fs, path)
        base = path.rstrip("/")
        files = sorted(n for n, e in fs.find(path, detail=True).items() if e.get("type") != "directory")
        outer = hashlib.sha256()
        for name in files:
            outer.update(f"{name[len(base):]}\0{_file_digest(fs, name)}\n".encode())
        return f"sha256:{outer.hexdigest()}"
    except FileNotFoundError:
        return MISSING
    except Exception as exc:
        raise _unreadable(uri, "read", exc) from exc


def _file_digest(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def observe(uri: str, old: Fingerprint | None) -> tuple[Fingerprint, bool]:
    """The input's fingerprint now, and whether its content had to be read to know it."""
    meta = probe_meta(uri)
    if meta == MISSING:
        return Fingerprint(MISSING, MISSING), False
    if not needs_digest(old, meta):
        assert old is not None
        return old, False
    return Fingerprint(meta, content_digest(uri)), True
