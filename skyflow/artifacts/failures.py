"""Turns what a storage library raises into an ArtifactError naming the artifact, the URI and the cause."""

from __future__ import annotations

import copy
import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from skyflow.errors import ArtifactError

# Storage libraries raise their own exception types; they are recognised by module so that none of
# them has to be imported here (s3fs, gcsfs and adlfs are optional extras).
_STORAGE_MODULES = {"botocore", "aiobotocore", "aiohttp", "azure", "google", "gcsfs", "s3fs", "adlfs",
                    "requests", "urllib3", "fsspec"}


def is_storage_failure(exc: BaseException) -> bool:
    """An exception that comes from reaching or using a store, as opposed to a bug in skyflow."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return type(exc).__module__.split(".")[0] in _STORAGE_MODULES


def describe_failure(exc: BaseException) -> str:
    """One line: what kind of failure, what to do about it, and the library's own words."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    words = _without_paths(exc, text)  # a digest or file name in the message is not the library's words
    if isinstance(exc, FileNotFoundError):
        return f"not found ({text})"
    if isinstance(exc, PermissionError) or _ACCESS_DENIED.search(words):
        return f"permission denied; check the credentials and the bucket's policy ({text})"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device; free space or choose another directory ({text})"
    if isinstance(exc, (ConnectionError, TimeoutError)) or _UNREACHABLE.search(words):
        return f"the store cannot be reached (after the library's retries); is it up? ({text})"
    return text


_ACCESS_DENIED = re.compile(r"\bAccessDenied\b|\b403\b|\bForbidden\b")
_UNREACHABLE = re.compile(r"[Cc]onnect|Timeout|timed out|Unreachable")


def _without_paths(exc: BaseException, text: str) -> str:
    """``text`` less the file names an OSError carries (a blob's path holds its hex digest)."""
    for name in (getattr(exc, "filename", None), getattr(exc, "filename2", None)):
        if isinstance(name, bytes):  # os functions given bytes paths report them as bytes
            name = os.fsdecode(name)
        if isinstance(name, str) and name:
            text = text.replace(name, "")
    return text


def storage_error(exc: BaseException, *, uri: str, action: str, artifact: str | None = None) -> ArtifactError:
    return ArtifactError(f"{action} failed: {describe_failure(exc)}", artifact=artifact, uri=uri)


@contextmanager
def translated(uri: str, action: str) -> Iterator[None]:
    """Re-raise storage failures inside the block as ArtifactError(uri=uri)."""
    try:
        yield
    except ArtifactError:
        raise
    except Exception as exc:
        if not is_storage_failure(exc):
            raise
        raise storage_error(exc, uri=uri, action=action) from exc


@contextmanager
def naming(artifact: str | None) -> Iterator[None]:
    """Add the artifact's name to an ArtifactError raised below a call that knows only the URI."""
    try:
        yield
    except ArtifactError as exc:
        if exc.artifact is not None or artifact is None:
            raise
        cause = exc.message.removeprefix(f"{exc.uri}: ") if exc.uri else exc.message
        named = copy.copy(exc)  # the same kind of error (DamagedArtifact keeps what it found), now named
        ArtifactError.__init__(named, cause, artifact=artifact, uri=exc.uri)
        raise named from exc.__cause__ or exc
