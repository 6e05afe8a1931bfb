"""FsspecStore's edge cases: an aborted streaming write leaves nothing, moves and listings of what is not
there, batch deletes a backend refuses, and modification times in each library's own format."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from skyflow.artifacts.store import FsspecStore, _modified_s, open_store


def memory_store() -> FsspecStore:
    return open_store(f"memory://store-{uuid.uuid4().hex}")


def failing_after(first: bytes) -> Iterator[bytes]:
    yield first
    raise ValueError("the bytes changed while they were read")


def test_a_streaming_write_that_fails_midway_leaves_no_object_and_keeps_its_error() -> None:
    store = memory_store()
    with pytest.raises(ValueError, match="the bytes changed while they were read"):
        store.write_chunks("blobs/x", failing_after(b"half of it"))
    assert store.size_of("blobs/x") is None
    assert store.list_keys("") == {}


def test_a_streaming_write_to_local_disk_that_fails_leaves_no_object(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ValueError, match="the bytes changed"):
        store.write_chunks("blobs/x", failing_after(b"half of it"))
    assert store.size_of("blobs/x") is None
    assert store.list_keys("") == {}  # the temporary file went too


@pytest.mark.parametrize("where", ["memory", "local"])
def test_moving_what_is_not_there_says_so(where: str, tmp_path: Path) -> None:
    store = memory_store() if where == "memory" else open_store(str(tmp_path / "store"))
    assert store.move("tmp/gone.staged", "blobs/x") is False
    store.write_bytes("tmp/here.staged", b"data")
    assert store.move("tmp/here.staged", "blobs/x") is True
    assert store.read_bytes("blobs/x") == b"data" and store.size_of("tmp/here.staged") is None


class _MissingBucket(MemoryFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """A filesystem whose listing of an absent bucket raises, as gcsfs and adlfs do."""

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(path)


def test_listing_a_prefix_of_a_missing_bucket_is_empty() -> None:
    store = FsspecStore(_MissingBucket(), "/bucket", "memory://bucket")
    assert store.list_keys("manifests") == {}


def test_a_batch_delete_naming_a_missing_object_still_deletes_the_others() -> None:
    store = memory_store()
    store.write_bytes("blobs/a", b"a")
    store.write_bytes("blobs/b", b"b")
    store.delete(["blobs/a", "blobs/gone", "blobs/b"])
    assert store.list_keys("blobs") == {}


def test_an_empty_upload_writes_nothing() -> None:
    store = memory_store()
    store.upload_files([])
    assert store.list_keys("") == {}
    assert repr(store) == f"FsspecStore({store.uri!r})"


@pytest.mark.parametrize(("info", "expected"), [
    ({"mtime": 1700000000}, 1700000000.0),
    ({"LastModified": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)}, 1704164645.0),
    ({"updated": "2024-01-02T03:04:05Z"}, 1704164645.0),  # gcsfs: ISO text
    ({"updated": "yesterday", "created": 5}, 5.0),
    ({"updated": "yesterday"}, None),
    ({}, None),
])
def test_modification_times_are_read_from_each_librarys_field(info: dict[str, Any], expected: float | None) -> None:
    assert _modified_s(info) == expected
