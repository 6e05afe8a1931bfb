"""FsspecStore on local disk and in memory: where a store lives and what it is opened with, atomic and
conditional writes, uploads, chunked reads and writes, moves, refreshed modification times, listings and
deletes, and the error each operation raises when the storage under it fails."""

from __future__ import annotations

import datetime as dt
import os
import re
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from skyflow.artifacts.manifest import CHUNK_BYTES
from skyflow.artifacts.store import DEFAULT_WORKERS, FsspecStore, _common_prefix, _modified_s, _protocol_of, open_store
from skyflow.errors import ArtifactError


def memory_store() -> FsspecStore:
    return open_store(f"memory://store-{uuid.uuid4().hex}")


def local_store(tmp_path: Path) -> FsspecStore:
    return open_store(str(tmp_path / "store"))


def sizes(store: FsspecStore, prefix: str = "") -> dict[str, int]:
    return {key: info.size_bytes for key, info in store.list_keys(prefix).items()}


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecStore:
    return local_store(tmp_path) if request.param == "local" else memory_store()


# --- opening a store -------------------------------------------------------------------------------------------


def test_a_local_store_is_created_with_its_parent_folders_and_writes_make_their_folders(tmp_path: Path) -> None:
    where = tmp_path / "a" / "b" / "store"
    store = open_store(str(where))
    assert where.is_dir()
    assert (store.uri, store.root, store.is_local, store.workers) == (str(where), str(where), True, DEFAULT_WORKERS)
    assert store.fs.storage_options == {"auto_mkdir": True}
    assert repr(store) == f"FsspecStore({str(where)!r})"


def test_a_relative_or_home_relative_local_path_is_made_absolute(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert open_store("here").uri == str(tmp_path / "here")
    assert (tmp_path / "here").is_dir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert open_store("~/there").uri == str(tmp_path / "home" / "there")
    assert (tmp_path / "home" / "there").is_dir()


def test_storage_options_and_workers_given_by_the_caller_win_over_the_defaults(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"), {"auto_mkdir": False}, workers=3)
    assert store.fs.storage_options == {"auto_mkdir": False}
    assert store.workers == 3


def test_an_unknown_scheme_is_refused_with_the_schemes_that_work() -> None:
    with pytest.raises(ArtifactError) as caught:
        open_store("ftp://host/path")
    assert str(caught.value) == ("ftp://host/path: unknown store scheme 'ftp'; use a local path, s3://, gs:// "
                                 "or az://")
    assert caught.value.uri == "ftp://host/path"


def test_a_local_store_that_cannot_be_created_says_where_and_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    where = tmp_path / "file" / "store"
    with pytest.raises(ArtifactError) as caught:
        open_store(str(where))
    assert str(caught.value) == (f"{where}: creating the store directory failed: NotADirectoryError: "
                                 f"[Errno 20] Not a directory: '{where}'")


def test_a_trailing_slash_on_the_uri_and_root_is_not_part_of_any_key() -> None:
    bucket = f"/bucket-{uuid.uuid4().hex}"
    fs = MemoryFileSystem()
    store = FsspecStore(fs, f"{bucket}/INBOX/", f"memory://{bucket}/INBOX/")
    assert store.uri == f"memory://{bucket}/INBOX"
    assert store.url("blobs/x") == f"memory://{bucket}/INBOX/blobs/x"
    store.write_bytes("blobs/x", b"data")
    assert fs.cat_file(f"{bucket}/INBOX/blobs/x") == b"data"
    assert sizes(store) == {"blobs/x": 4}


def test_a_store_on_a_local_folder_that_does_not_exist_yet_makes_it_on_the_first_write(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    store = FsspecStore(LocalFileSystem(), str(root), str(root))
    assert store.write_bytes("k", b"v") is True
    assert (root / "k").read_bytes() == b"v"


# --- writes ----------------------------------------------------------------------------------------------------


def test_a_write_replaces_the_object_and_says_it_wrote(store: FsspecStore) -> None:
    assert store.write_bytes("refs/x", b"first") is True
    assert store.write_bytes("refs/x", b"second") is True
    assert store.read_bytes("refs/x") == b"second"


def test_an_exclusive_write_creates_only_what_is_not_there(store: FsspecStore) -> None:
    assert store.write_bytes("locks/x", b"mine", exclusive=True) is True
    assert store.write_bytes("locks/x", b"theirs", exclusive=True) is False
    assert store.read_bytes("locks/x") == b"mine"
    assert sizes(store) == {"locks/x": 4}


def test_local_writes_pass_through_tmp_and_leave_nothing_there(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    store.write_bytes("blobs/a", b"a")
    store.write_bytes("blobs/a", b"b", exclusive=True)
    store.write_chunks("blobs/c", [b"c"])
    source = tmp_path / "source"
    source.write_bytes(b"d")
    store.upload_files([(source, "blobs/d")])
    assert sorted(os.listdir(tmp_path / "store")) == ["blobs", "tmp"]
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_uploaded_files_land_under_their_keys(store: FsspecStore, tmp_path: Path) -> None:
    pairs = []
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(f"content {i}".encode())
        pairs.append((tmp_path / f"f{i}", f"blobs/{i}"))
    store.upload_files(pairs)
    assert {key: store.read_bytes(key) for key in store.list_keys("blobs")} == {
        "blobs/0": b"content 0", "blobs/1": b"content 1", "blobs/2": b"content 2"}


def test_uploading_a_missing_file_names_the_first_key_and_how_many(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    with pytest.raises(ArtifactError) as caught:
        store.upload_files([(tmp_path / "gone", "blobs/a"), (tmp_path / "gone2", "blobs/b")])
    assert str(caught.value) == (f"{store.uri}/blobs/a: uploading 2 files starting with failed: not found "
                                 f"(FileNotFoundError: [Errno 2] No such file or directory: '{tmp_path / 'gone'}')")
    assert caught.value.uri == f"{store.uri}/blobs/a"


def test_a_large_object_is_read_back_in_chunks_of_chunk_bytes(store: FsspecStore) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256) + b"end"
    store.write_chunks("blobs/big", [data[:1000], data[1000:]])
    chunks = list(store.read_chunks("blobs/big"))
    assert [len(c) for c in chunks] == [CHUNK_BYTES, 3]
    assert b"".join(chunks) == data


def test_a_staged_object_gets_a_fresh_key_under_tmp_and_moves_to_its_name(store: FsspecStore) -> None:
    first = store.stage_chunks([b"sta", b"ged"])
    second = store.stage_chunks([b"other"])
    assert re.fullmatch(r"tmp/[0-9a-f]{32}\.staged", first) and first != second
    assert store.read_bytes(first) == b"staged"
    assert store.move(first, "blobs/final") is True
    assert store.read_bytes("blobs/final") == b"staged"
    assert sizes(store) == {"blobs/final": 6, second: 5}


# --- modification times, listings, deletes -------------------------------------------------------------------


def test_touching_local_objects_refreshes_their_modification_times(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    store.write_bytes("blobs/a", b"a")
    os.utime(tmp_path / "store" / "blobs" / "a", (1_000_000, 1_000_000))
    assert store.list_keys("blobs")["blobs/a"].modified_s == 1_000_000.0
    assert store.touch(["blobs/a", "blobs/gone"]) is True
    modified = store.list_keys("blobs")["blobs/a"].modified_s
    assert modified is not None and modified > 1_000_000.0
    assert sizes(store) == {"blobs/a": 1}  # the missing key was not created


def test_an_object_store_cannot_refresh_modification_times() -> None:
    store = memory_store()
    store.write_bytes("blobs/a", b"a")
    before = store.list_keys("blobs")
    assert store.touch(["blobs/a"]) is False
    assert store.list_keys("blobs") == before


def test_a_listing_gives_each_objects_size_and_a_prefix_may_end_in_a_slash(store: FsspecStore) -> None:
    store.write_bytes("INBOX/empty", b"")
    store.write_bytes("INBOX/sub/two", b"12")
    store.write_bytes("other", b"123")
    expected = {"INBOX/empty": 0, "INBOX/sub/two": 2}
    assert sizes(store, "INBOX/") == expected
    assert sizes(store, "INBOX") == expected
    assert sizes(store, "INBOX/sub/") == {"INBOX/sub/two": 2}
    assert sizes(store, "nothing/") == {}


def test_deleting_local_objects_ignores_the_ones_already_gone(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    store.write_bytes("blobs/a", b"a")
    store.write_bytes("blobs/b", b"b")
    store.delete(["blobs/gone", "blobs/a"])
    store.delete([])
    assert sizes(store) == {"blobs/b": 1}


def test_sizes_of_many_keys_answers_each_once_with_none_for_the_absent(store: FsspecStore) -> None:
    for i in range(9):
        store.write_bytes(f"blobs/sha256/{i:02d}", b"x" * i)
    keys = [f"blobs/sha256/{i:02d}" for i in range(11)] + ["blobs/sha256/03", "other/key"]
    assert store.sizes_of(keys) == {**{f"blobs/sha256/{i:02d}": i for i in range(9)},
                                    "blobs/sha256/09": None, "blobs/sha256/10": None, "other/key": None}
    assert store.list_prefix("blobs/", wanted_keys=11) is None  # no ordered paged listing here


@pytest.mark.parametrize(("keys", "prefix"), [
    (["blobs/sha256/ab/1", "blobs/sha256/cd/2"], "blobs/sha256/"),
    (["blobs/sha256/ab/1", "blobs/sha256/ab/2"], "blobs/sha256/ab/"),
    (["blobs/x", "manifests/y"], ""),
    (["blobs/x", "top"], ""),
    (["a/b/c"], "a/b/"),
])
def test_the_listing_prefix_for_many_keys_is_their_deepest_shared_folder(keys: list[str], prefix: str) -> None:
    assert _common_prefix(keys) == prefix


# --- failures name the object, the operation and the cause ----------------------------------------------------


def _under_a_file(store: FsspecStore, what: str) -> Callable[[], Any]:
    return {
        "size_of": lambda: store.size_of("file/x"),
        "read_bytes": lambda: store.read_bytes("file/x"),
        "read_optional": lambda: store.read_optional("file/x"),
        "read_chunks": lambda: list(store.read_chunks("file/x")),
        "write_bytes": lambda: store.write_bytes("file/x", b"1"),
        "write_chunks": lambda: store.write_chunks("file/x", [b"1"]),
        "move": lambda: store.move("file", "file/x"),
        "touch": lambda: store.touch(["file/x"]),
        "delete": lambda: store.delete(["folder", "file"]),
    }[what]


@pytest.mark.parametrize(("what", "key", "message"), [
    ("size_of", "file/x", "looking up failed: NotADirectoryError: [Errno 20] Not a directory: '{root}/file/x'"),
    ("read_bytes", "file/x", "reading failed: NotADirectoryError: [Errno 20] Not a directory: '{root}/file/x'"),
    ("read_optional", "file/x", "reading failed: NotADirectoryError: [Errno 20] Not a directory: '{root}/file/x'"),
    ("read_chunks", "file/x", "reading failed: NotADirectoryError: [Errno 20] Not a directory: '{root}/file/x'"),
    ("write_bytes", "file/x", "writing failed: FileExistsError: [Errno 17] File exists: '{root}/file'"),
    ("write_chunks", "file/x", "writing failed: FileExistsError: [Errno 17] File exists: '{root}/file'"),
    ("move", "file", "moving failed: FileExistsError: [Errno 17] File exists: '{root}/file'"),
    ("touch", None, "refreshing failed: NotADirectoryError: [Errno 20] Not a directory"),
    ("delete", "folder", "deleting 2 objects from failed: IsADirectoryError: [Errno 21] Is a directory: "
                         "'{root}/folder'"),
])
def test_a_failing_local_operation_names_the_object_and_what_was_being_done(
        tmp_path: Path, what: str, key: str | None, message: str) -> None:
    store = local_store(tmp_path)
    store.write_bytes("file", b"a file, not a folder")
    store.write_bytes("folder/inside", b"1")
    with pytest.raises(ArtifactError) as caught:
        _under_a_file(store, what)()
    uri = store.url(key) if key else store.uri
    assert str(caught.value) == f"{uri}: {message.format(root=store.root)}"
    assert caught.value.uri == uri


def test_streamed_writes_and_uploads_replace_an_existing_local_object(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    store.write_bytes("k/one", b"old")
    store.write_chunks("k/one", iter([b"new ", b"bytes"]))
    assert store.read_bytes("k/one") == b"new bytes"
    store.write_bytes("k/two", b"old")
    (tmp_path / "two.txt").write_bytes(b"uploaded")
    store.upload_files([(tmp_path / "two.txt", "k/two")])
    assert store.read_bytes("k/two") == b"uploaded"


@pytest.mark.parametrize(("info", "seconds"), [
    ({"mtime": 5}, 5.0),
    ({"LastModified": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}, 1704067200.0),
    ({"last_modified": 7.5}, 7.5),  # adlfs
    ({"updated": "2024-01-01T00:00:00Z"}, 1704067200.0),  # gcsfs
    ({"created": "2024-01-01Z"}, 1704067200.0),
    ({"updated": "2024-01-01T00:00:00z"}, None),
    ({"updated": "yesterday"}, None),
    ({"size": 3}, None),
])
def test_a_modification_time_is_read_from_whichever_key_the_backend_uses(info: dict[str, Any],
                                                                          seconds: float | None) -> None:
    assert _modified_s(info) == seconds


@pytest.mark.parametrize(("protocol", "name"), [
    ("file", "file"), (("gs", "gcs"), "gcs"), (("abfs", "az"), "abfs"), ("s3a", "s3"), ("http", "http"),
    (("dir", "x"), "dir")])
def test_a_filesystems_protocol_is_named_in_open_stores_terms(protocol: str | tuple[str, ...], name: str) -> None:
    assert _protocol_of(types.SimpleNamespace(protocol=protocol)) == name
