"""Committing an output and reading it back, exactly: what lands in the store (and what is not uploaded
again), how the blob folder is looked up, what errors name, and what verify reports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from skyflow.artifacts import commit as commit_module
from skyflow.artifacts.commit import commit_output, read_manifest, verify_artifact, write_manifest
from skyflow.artifacts.integrity import DamagedArtifact
from skyflow.artifacts.listing import PrefixListing
from skyflow.artifacts.manifest import FileEntry, Manifest, digest_bytes
from skyflow.artifacts.refs import QUARANTINE, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore, open_store
from skyflow.errors import ArtifactError


class WatchedStore(FsspecStore):
    """A real store (memory or local) that records its writes and lookups, and can run a hook just
    before the manifest's conditional create (what a concurrent gc or a stray writer does then)."""

    def __init__(self, uri: str, *, workers: int = 16) -> None:
        base = open_store(uri)
        super().__init__(base.fs, base.root, base.uri, workers=workers)
        self.written: list[str] = []
        self.looked_up: list[str] = []
        self.before_manifest: Callable[[], None] | None = None
        self.after_first_write: Callable[[], None] | None = None

    def _wrote(self, key: str) -> None:
        self.written.append(key)
        if self.after_first_write is not None:
            hook, self.after_first_write = self.after_first_write, None
            hook()

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        if exclusive and self.before_manifest is not None:
            hook, self.before_manifest = self.before_manifest, None
            hook()
        done = super().write_bytes(key, data, exclusive=exclusive)
        self._wrote(key)
        return done

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> None:
        super().write_chunks(key, chunks)
        self._wrote(key)

    def size_of(self, key: str) -> int | None:
        self.looked_up.append(key)
        return super().size_of(key)


class ListingStore(WatchedStore):
    """An object store with an ordered listing of its blob folder (as S3 and GCS have)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.listings: list[tuple[str, int]] = []

    def list_prefix(self, prefix: str, *, wanted_keys: int) -> PrefixListing | None:
        self.listings.append((prefix, wanted_keys))
        return PrefixListing(prefix, {k: info.size_bytes for k, info in self.list_keys(prefix).items()}, None)


def memory_store(*, workers: int = 16) -> WatchedStore:
    return WatchedStore(f"memory://commit-contract-{uuid.uuid4().hex}", workers=workers)


def local_store(tmp_path: Path, *, workers: int = 16) -> WatchedStore:
    return WatchedStore(str(tmp_path / "store"), workers=workers)


def output_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return out


def stored_keys(store: FsspecStore) -> set[str]:
    return set(store.list_keys(""))


@pytest.fixture
def large_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as large: hashed first, then streamed."""
    monkeypatch.setattr(commit_module, "INLINE_BYTES", 0)


def test_a_missing_output_path_is_an_error_naming_the_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        commit_output(memory_store(), tmp_path / "nothing", name="model")
    assert str(caught.value) == (f"artifact 'model' at {tmp_path / 'nothing'}: output path does not exist; "
                                 "the stage wrote nothing there")
    assert (caught.value.artifact, caught.value.uri) == ("model", str(tmp_path / "nothing"))


def test_data_pointed_at_may_be_a_symlinked_directory_but_a_confined_output_may_not(tmp_path: Path) -> None:
    real = output_dir(tmp_path, {"rows.csv": b"a,b\n"})
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    store = memory_store()
    ref = commit_output(store, link, name="data")
    assert read_manifest(store, ref.digest) == Manifest("dir", (FileEntry("rows.csv", digest_bytes(b"a,b\n"), 4),))
    with pytest.raises(ArtifactError) as caught:
        commit_output(store, link, name="data", confined=True)
    assert str(caught.value) == (f"artifact 'data' at {link}: the output directory was replaced by a symlink to "
                                 f"{real}; a stage writes its files into the directory it is given (copy them in)")


def test_a_single_file_commits_as_a_file_artifact_named_by_the_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"0123456789")
    store = memory_store()
    ref = commit_output(store, tmp_path / "weights.bin", name="weights")
    manifest = Manifest("file", (FileEntry("weights.bin", digest_bytes(b"0123456789"), 10),))
    assert read_manifest(store, ref.digest) == manifest
    assert (ref.name, ref.digest, ref.size_bytes, ref.file_count) == ("weights", manifest.digest, 10, 1)
    assert stored_keys(store) == {blob_key(manifest.files[0].digest), manifest_key(manifest.digest)}


def test_a_small_blob_on_local_disk_with_the_right_bytes_is_not_written_again(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    blob = blob_key(digest_bytes(b"checkpoint"))
    store.write_bytes(blob, b"checkpoint")
    store.written.clear()
    ref = commit_output(store, output_dir(tmp_path, {"ckpt": b"checkpoint"}), name="ckpt")
    assert store.written == [manifest_key(ref.digest)]
    assert stored_keys(store) == {blob, manifest_key(ref.digest)}


@pytest.mark.parametrize("size", [10, 16 << 20], ids=["small", "at-the-inline-limit"])
def test_a_damaged_blob_of_the_right_size_on_local_disk_is_replaced(tmp_path: Path, size: int) -> None:
    data = bytes(size - 1) + b"1"
    store = local_store(tmp_path)
    blob = blob_key(digest_bytes(data))
    store.write_bytes(blob, bytes(size - 1) + b"2")  # same size, one byte off
    commit_output(store, output_dir(tmp_path, {"ckpt": data}), name="ckpt")
    assert store.read_bytes(blob) == data


def test_a_commit_of_few_files_looks_each_blob_up_without_listing(tmp_path: Path) -> None:
    store = ListingStore(f"memory://commit-contract-{uuid.uuid4().hex}")
    files = {f"f{i}": f"file {i}".encode() for i in range(7)}
    commit_output(store, output_dir(tmp_path, files), name="few")
    assert store.listings == []
    assert sorted(store.looked_up) == sorted(blob_key(digest_bytes(d)) for d in files.values())


def test_a_commit_of_many_files_learns_what_the_store_has_from_one_listing(tmp_path: Path) -> None:
    store = ListingStore(f"memory://commit-contract-{uuid.uuid4().hex}")
    files = {f"f{i}": f"file {i}".encode() for i in range(8)}
    blobs = {name: blob_key(digest_bytes(data)) for name, data in files.items()}
    for name in ("f0", "f1", "f2"):
        store.write_bytes(blobs[name], files[name])
    store.write_bytes(blobs["f3"], b"truncated")  # wrong size: uploaded again
    store.written.clear()
    ref = commit_output(store, output_dir(tmp_path, files), name="many")
    assert store.listings == [("blobs/sha256/", 8)]
    assert sorted(store.written) == sorted([*(blobs[f"f{i}"] for i in range(3, 8)), manifest_key(ref.digest)])
    # no lookup while hashing; the reused blobs are checked once more after the manifest lands
    assert sorted(store.looked_up) == sorted(blobs[name] for name in ("f0", "f1", "f2"))
    assert all(store.read_bytes(blobs[name]) == data for name, data in files.items())


@pytest.mark.parametrize("where", ["memory", "local"])
def test_reused_small_blobs_removed_by_a_gc_before_the_manifest_are_put_back(tmp_path: Path, where: str) -> None:
    store = memory_store(workers=1) if where == "memory" else local_store(tmp_path, workers=1)
    files = {"a": b"alpha", "b": b"bravo"}
    blobs = {name: blob_key(digest_bytes(data)) for name, data in files.items()}
    for name, data in files.items():
        store.write_bytes(blobs[name], data)
    store.before_manifest = lambda: store.delete([blobs["b"]])
    ref = commit_output(store, output_dir(tmp_path, files), name="pair")
    assert {name: store.read_bytes(key) for name, key in blobs.items()} == files
    assert stored_keys(store) == {*blobs.values(), manifest_key(ref.digest)}


def test_a_removed_small_blob_whose_file_changed_is_an_error_naming_the_file(tmp_path: Path) -> None:
    store = memory_store()
    blob = blob_key(digest_bytes(b"checkpoint"))
    store.write_bytes(blob, b"checkpoint")
    out = output_dir(tmp_path, {"ckpt": b"checkpoint"})

    def gc_and_stray_writer() -> None:
        store.delete([blob])
        (out / "ckpt").write_bytes(b"checkpoint, still being written")

    store.before_manifest = gc_and_stray_writer
    with pytest.raises(ArtifactError) as caught:
        commit_output(store, out, name="ckpt")
    assert str(caught.value) == (f"artifact 'ckpt' at {out / 'ckpt'}: the file changed while it was being committed "
                                 "and its stored copy was removed meanwhile; a process of the stage may still be "
                                 "writing it")
    assert (caught.value.artifact, caught.value.uri) == ("ckpt", str(out / "ckpt"))
    assert store.size_of(blob) is None


@pytest.mark.usefixtures("large_files")
@pytest.mark.parametrize("where", ["memory", "local"])
def test_every_large_file_of_a_commit_is_stored(tmp_path: Path, where: str) -> None:
    store = memory_store() if where == "memory" else local_store(tmp_path)
    files = {"a.bin": b"first weights", "b.bin": b"second weights", "c.bin": b"third weights"}
    ref = commit_output(store, output_dir(tmp_path, files), name="weights")
    assert read_manifest(store, ref.digest).files == tuple(
        FileEntry(name, digest_bytes(data), len(data)) for name, data in files.items())
    assert {store.read_bytes(blob_key(digest_bytes(data))) for data in files.values()} == set(files.values())
    assert stored_keys(store) == {*(blob_key(digest_bytes(d)) for d in files.values()), manifest_key(ref.digest)}


@pytest.mark.usefixtures("large_files")
def test_a_large_file_goes_to_an_object_store_in_one_upload_under_its_name(tmp_path: Path) -> None:
    store = memory_store()
    ref = commit_output(store, output_dir(tmp_path, {"ckpt": b"checkpoint"}), name="ckpt")
    assert store.written == [blob_key(digest_bytes(b"checkpoint")), manifest_key(ref.digest)]  # no staged copy


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_a_file_replaced_while_the_commit_runs_is_a_reading_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: bool) -> None:
    if large:
        monkeypatch.setattr(commit_module, "INLINE_BYTES", 0)
    out = output_dir(tmp_path, {"a": b"first", "b": b"second"})
    store = memory_store(workers=1)  # one file at a time, in order

    def stray_process_replaces_b() -> None:
        (out / "b").unlink()
        (out / "b").mkdir()

    store.after_first_write = stray_process_replaces_b
    with pytest.raises(ArtifactError) as caught:
        commit_output(store, out, name="out")
    assert str(caught.value) == (f"artifact 'out' at {out / 'b'}: reading failed: IsADirectoryError: [Errno 21] "
                                 f"Is a directory: '{out / 'b'}'")
    assert caught.value.uri == str(out / "b")


def test_a_damaged_manifest_under_the_name_is_quarantined_and_replaced() -> None:
    store = memory_store()
    manifest = Manifest("file", (FileEntry("f", digest_bytes(b"x"), 1),))
    key = manifest_key(manifest.digest)
    store.write_bytes(key, b'{"kind": "fi')
    write_manifest(store, manifest)
    assert store.read_bytes(key) == manifest.to_bytes()
    moved = list(store.list_keys(QUARANTINE))
    assert [m.rsplit(".", 1)[0] for m in moved] == [f"{QUARANTINE}/{key}"]
    assert store.read_bytes(moved[0]) == b'{"kind": "fi'


def test_an_artifact_whose_manifest_is_gone_is_reported_not_found(tmp_path: Path) -> None:
    store = memory_store()
    ref = commit_output(store, output_dir(tmp_path, {"a": b"alpha"}), name="model")
    store.delete([manifest_key(ref.digest)])
    with pytest.raises(DamagedArtifact) as caught:
        verify_artifact(ref)
    assert str(caught.value) == (f"artifact 'model' at {store.url(manifest_key(ref.digest))}: artifact not found: "
                                 "no manifest with this digest in the store; was it committed here, or removed by "
                                 "garbage collection?")
    assert (caught.value.artifact, caught.value.uri, caught.value.digest, caught.value.quarantined) == (
        "model", store.url(manifest_key(ref.digest)), ref.digest, ())


def test_a_corrupted_manifest_is_quarantined_and_the_error_says_where() -> None:
    store = memory_store()
    digest = Manifest("file", (FileEntry("f", digest_bytes(b"x"), 1),)).digest
    key = manifest_key(digest)
    store.write_bytes(key, b"garbage")
    with pytest.raises(DamagedArtifact) as caught:
        read_manifest(store, digest, name="model")
    moved = list(store.list_keys(QUARANTINE))
    assert len(moved) == 1 and store.read_bytes(moved[0]) == b"garbage"
    assert str(caught.value) == (f"artifact 'model' at {store.url(key)}: manifest is corrupted: its bytes hash to "
                                 f"{digest_bytes(b'garbage')}, not {digest}; moved to {store.url(moved[0])}")
    assert (caught.value.uri, caught.value.digest, caught.value.quarantined) == (store.url(key), digest, (moved[0],))


class GoneAfterReadStore(WatchedStore):
    """A gc removes the manifest right after its first read."""

    def read_optional(self, key: str) -> bytes | None:
        data = super().read_optional(key)
        self.delete([key])
        return data


def test_a_corrupted_manifest_removed_before_it_can_be_quarantined_is_reported_without_a_move() -> None:
    store = GoneAfterReadStore(f"memory://commit-contract-{uuid.uuid4().hex}")
    digest = Manifest("file", (FileEntry("f", digest_bytes(b"x"), 1),)).digest
    store.write_bytes(manifest_key(digest), b"garbage")
    with pytest.raises(DamagedArtifact) as caught:
        read_manifest(store, digest)
    assert str(caught.value) == (f"{store.url(manifest_key(digest))}: manifest is corrupted: its bytes hash to "
                                 f"{digest_bytes(b'garbage')}, not {digest}")
    assert caught.value.quarantined == ()
    assert store.list_keys(QUARANTINE) == {}


def test_a_manifest_that_is_not_valid_json_names_its_url() -> None:
    store = memory_store()
    digest = digest_bytes(b"not json")
    store.write_bytes(manifest_key(digest), b"not json")
    with pytest.raises(ArtifactError) as caught:
        read_manifest(store, digest)
    assert str(caught.value) == (f"{store.url(manifest_key(digest))}: manifest is not valid JSON of this format "
                                 "(Expecting value: line 1 column 1 (char 0))")
    assert caught.value.uri == store.url(manifest_key(digest))


def test_verify_re_reads_blob_bytes_unless_told_not_to(tmp_path: Path) -> None:
    store = memory_store()
    ref = commit_output(store, output_dir(tmp_path, {"a": b"alpha"}), name="model")
    store.write_bytes(blob_key(digest_bytes(b"alpha")), b"ALPHA")  # same size, other bytes
    assert verify_artifact(ref, deep=False) is True
    with pytest.raises(DamagedArtifact):
        verify_artifact(ref)


SEVEN = {name: f"{name} bytes".encode() for name in "abcdefg"}


def test_verify_lists_up_to_five_missing_files(tmp_path: Path) -> None:
    store = memory_store()
    ref = commit_output(store, output_dir(tmp_path, SEVEN), name="data")
    store.delete([blob_key(digest_bytes(SEVEN[name])) for name in "abcde"])
    with pytest.raises(DamagedArtifact) as caught:
        verify_artifact(ref)
    assert str(caught.value) == (f"artifact 'data' at {ref.uri}: 5 of 7 files are missing or corrupted: "
                                 "a, b, c, d, e; commit the output again or transfer it from a store that has it")
    assert (caught.value.artifact, caught.value.uri, caught.value.digest, caught.value.quarantined) == (
        "data", ref.uri, ref.digest, ())


def test_verify_counts_the_rest_beyond_five_and_says_where_damaged_blobs_went(tmp_path: Path) -> None:
    store = memory_store()
    ref = commit_output(store, output_dir(tmp_path, SEVEN), name="data")
    for name in "abcdef":
        store.write_bytes(blob_key(digest_bytes(SEVEN[name])), SEVEN[name].upper())  # same size, other bytes
    with pytest.raises(DamagedArtifact) as caught:
        verify_artifact(ref)
    assert str(caught.value) == (f"artifact 'data' at {ref.uri}: 6 of 7 files are missing or corrupted: "
                                 f"a, b, c, d, e and 1 more (damaged blobs moved to {store.url('quarantine')}/); "
                                 "commit the output again or transfer it from a store that has it")
    assert (caught.value.artifact, caught.value.uri, caught.value.digest) == ("data", ref.uri, ref.digest)
    assert sorted(caught.value.quarantined) == sorted(store.list_keys(QUARANTINE))
    assert len(caught.value.quarantined) == 6


@pytest.mark.parametrize("large", [False, True])
def test_files_with_the_same_bytes_are_uploaded_once(tmp_path: Path, large: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if large:
        monkeypatch.setattr(commit_module, "INLINE_BYTES", 0)
    store = memory_store(workers=1)
    files = {"a": b"same bytes", "b/copy": b"same bytes", "c": b"other bytes", "d": b"same bytes"}
    ref = commit_output(store, output_dir(tmp_path, files), name="twins")
    blobs = sorted([blob_key(digest_bytes(b"same bytes")), blob_key(digest_bytes(b"other bytes"))])
    assert sorted(store.written) == sorted([*blobs, manifest_key(ref.digest)])
    assert sorted(store.looked_up) == blobs  # the copies are not even looked up: this commit has their bytes
    assert sorted(f.path for f in read_manifest(store, ref.digest).files) == ["a", "b/copy", "c", "d"]


def test_files_not_started_when_one_fails_are_not_tried(tmp_path: Path) -> None:
    """With one worker the files go in order: the first fails, and no later file reaches the store."""
    store = memory_store(workers=1)
    out = output_dir(tmp_path, {f"f{i}": f"file {i}".encode() for i in range(6)})
    failing = blob_key(digest_bytes(b"file 0"))
    tried: list[str] = []
    original = store.write_bytes

    def write_bytes(key: str, data: bytes, *, exclusive: bool = False) -> bool:
        tried.append(key)
        if key == failing:
            raise ArtifactError("the store refused it", uri=key)
        return original(key, data, exclusive=exclusive)

    store.write_bytes = write_bytes  # type: ignore[method-assign]
    with pytest.raises(ArtifactError, match="the store refused it"):
        commit_output(store, out, name="stopped")
    assert tried == [failing] and store.written == []
