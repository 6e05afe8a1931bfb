"""Placing an artifact in a local directory, exactly: which files land where, what a sync reports and
counts as progress, what is left alone, and the errors for missing, corrupted or unsafe targets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.callbacks import Callback

from skyflow.artifacts.commit import commit_output, read_manifest
from skyflow.artifacts.integrity import DamagedArtifact
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.progress import reporting_transfers_to
from skyflow.artifacts.refs import QUARANTINE, ArtifactRef, blob_key
from skyflow.artifacts.store import FsspecStore, open_store
from skyflow.artifacts.sync import SyncStats, fetch_artifact, sync_artifact
from skyflow.errors import ArtifactError

FILES = {"top.txt": b"top level", "a/b/deep.txt": b"nested two levels"}
TOTAL = sum(len(d) for d in FILES.values())


def memory_store() -> FsspecStore:
    return open_store(f"memory://sync-contract-{uuid.uuid4().hex}")


def committed(tmp_path: Path, files: dict[str, bytes], *, store: FsspecStore | None = None,
              name: str = "data") -> ArtifactRef:
    out = tmp_path / "out"
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return commit_output(store or memory_store(), out, name=name)


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_sync_places_every_file_and_a_second_sync_leaves_them_alone(tmp_path: Path) -> None:
    ref = committed(tmp_path, FILES)
    dest = tmp_path / "dest"
    assert sync_artifact(ref, dest) == SyncStats(files_copied=2, files_unchanged=0, bytes_copied=TOTAL)
    assert files_under(dest) == FILES
    assert sync_artifact(ref, dest) == SyncStats(files_copied=0, files_unchanged=2, bytes_copied=0)
    assert sync_artifact(ref, dest, incremental=False) == SyncStats(files_copied=2, files_unchanged=0,
                                                                    bytes_copied=TOTAL)
    assert files_under(dest) == FILES


def test_a_local_file_of_the_right_size_but_other_bytes_is_replaced(tmp_path: Path) -> None:
    ref = committed(tmp_path, FILES)
    dest = tmp_path / "dest"
    (dest / "a" / "b").mkdir(parents=True)
    (dest / "top.txt").write_bytes(b"TOP LEVEL")
    (dest / "a" / "b" / "deep.txt").write_bytes(FILES["a/b/deep.txt"])
    assert sync_artifact(ref, dest) == SyncStats(files_copied=1, files_unchanged=1, bytes_copied=9)
    assert files_under(dest) == FILES


def test_a_symlink_in_the_destination_is_replaced_by_the_file_not_written_through(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"top.txt": b"top level"})
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(b"top level")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "top.txt").symlink_to(elsewhere)
    assert sync_artifact(ref, dest) == SyncStats(files_copied=1, files_unchanged=0, bytes_copied=9)
    assert not (dest / "top.txt").is_symlink() and (dest / "top.txt").read_bytes() == b"top level"
    assert elsewhere.read_bytes() == b"top level"


def test_include_and_exclude_globs_pick_the_files_placed(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"a.txt": b"a", "b.txt": b"bb", "c.csv": b"ccc"})
    dest = tmp_path / "dest"
    stats = sync_artifact(ref, dest, include=["*.txt"], exclude=["b*"])
    assert stats == SyncStats(files_copied=1, files_unchanged=0, bytes_copied=1)
    assert files_under(dest) == {"a.txt": b"a"}


def test_fetching_a_file_artifact_returns_the_file_and_a_directory_artifact_the_directory(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"weights")
    store = memory_store()
    file_ref = commit_output(store, tmp_path / "weights.bin", name="weights")
    assert fetch_artifact(file_ref, tmp_path / "got-file") == (tmp_path / "got-file").resolve() / "weights.bin"
    assert (tmp_path / "got-file" / "weights.bin").read_bytes() == b"weights"
    dir_ref = committed(tmp_path, FILES, store=store)
    assert fetch_artifact(dir_ref, tmp_path / "got-dir") == (tmp_path / "got-dir").resolve()
    assert files_under(tmp_path / "got-dir") == FILES


def test_a_symlink_in_the_destination_leading_outside_is_refused(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"sub/x.txt": b"x"})
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactError) as caught:
        sync_artifact(ref, dest)
    target = dest.resolve() / "sub" / "x.txt"
    assert str(caught.value) == (f"artifact 'data' at {target}: 'sub/x.txt' would be written outside {dest.resolve()} "
                                 "(through a symlink); refusing it")
    assert (caught.value.artifact, caught.value.uri) == ("data", str(target))
    assert list(outside.iterdir()) == []


def test_a_destination_that_cannot_be_created_is_an_error_naming_it(tmp_path: Path) -> None:
    ref = committed(tmp_path, FILES)
    (tmp_path / "plain-file").write_bytes(b"")
    dest = tmp_path / "plain-file" / "dest"
    with pytest.raises(ArtifactError) as caught:
        sync_artifact(ref, dest)
    assert str(caught.value) == (f"artifact 'data' at {dest}: creating the destination directory failed: "
                                 f"NotADirectoryError: [Errno 20] Not a directory: '{dest}'")
    assert caught.value.uri == str(dest)


def test_a_file_in_the_way_of_a_needed_directory_is_a_writing_error(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"a/b.txt": b"b"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").write_bytes(b"in the way")
    with pytest.raises(ArtifactError) as caught:
        sync_artifact(ref, dest)
    target = dest.resolve() / "a" / "b.txt"
    assert str(caught.value) == (f"artifact 'data' at {target}: writing failed: FileExistsError: [Errno 17] "
                                 f"File exists: '{dest.resolve() / 'a'}'")
    assert caught.value.uri == str(target)


def test_progress_counts_every_byte_once_copied_or_found_up_to_date(tmp_path: Path) -> None:
    ref = committed(tmp_path, FILES)
    dest = tmp_path / "dest"
    with reporting_transfers_to(Callback()) as first:
        sync_artifact(ref, dest)
    assert (first.size, first.value) == (TOTAL, TOTAL)
    with reporting_transfers_to(Callback()) as second:
        sync_artifact(ref, dest)
    assert (second.size, second.value) == (TOTAL, TOTAL)


def test_a_missing_blob_is_reported_with_its_file_and_nothing_is_placed(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"b.txt": b"bravo"})
    key = blob_key(digest_bytes(b"bravo"))
    ref.store.delete([key])
    dest = tmp_path / "dest"
    with pytest.raises(DamagedArtifact) as caught:
        sync_artifact(ref, dest)
    assert str(caught.value) == (f"artifact 'data' at {ref.store.url(key)}: blob for 'b.txt' is missing: the manifest "
                                 f"says 5 bytes, {digest_bytes(b'bravo')}")
    assert (caught.value.uri, caught.value.digest, caught.value.quarantined) == (ref.store.url(key), ref.digest, ())
    assert list(dest.iterdir()) == []


def test_a_corrupted_blob_is_quarantined_and_nothing_is_placed(tmp_path: Path) -> None:
    ref = committed(tmp_path, {"b.txt": b"bravo"})
    key = blob_key(digest_bytes(b"bravo"))
    ref.store.write_bytes(key, b"BRAVO")
    dest = tmp_path / "dest"
    with pytest.raises(DamagedArtifact) as caught:
        sync_artifact(ref, dest)
    moved = list(ref.store.list_keys(QUARANTINE))
    assert len(moved) == 1 and ref.store.read_bytes(moved[0]) == b"BRAVO"
    assert str(caught.value) == (f"artifact 'data' at {ref.store.url(key)}: blob for 'b.txt' is corrupted: read 5 "
                                 f"bytes hashing to {digest_bytes(b'BRAVO')}, manifest says 5 bytes, "
                                 f"{digest_bytes(b'bravo')}; moved to {ref.store.url(moved[0])}")
    assert (caught.value.uri, caught.value.digest, caught.value.quarantined) == (ref.store.url(key), ref.digest,
                                                                                 (moved[0],))
    assert ref.store.size_of(key) is None
    assert list(dest.iterdir()) == []


class ScriptedReadsStore(FsspecStore):
    """A memory store where reads of one blob see other bytes a set number of times, and a gc may remove
    that blob after a given read."""

    def __init__(self, key: str, *, torn_reads: int, removed_after: int | None = None) -> None:
        base = open_store(f"memory://sync-contract-{uuid.uuid4().hex}")
        super().__init__(base.fs, base.root, base.uri)
        self.key, self.torn_reads, self.removed_after, self.reads = key, torn_reads, removed_after, 0

    def read_chunks(self, key: str) -> Iterator[bytes]:
        if key != self.key:
            yield from super().read_chunks(key)
            return
        self.reads += 1
        if self.reads <= self.torn_reads:
            yield b"BRAVO"
        else:
            yield from super().read_chunks(key)
        if self.reads == self.removed_after:
            self.delete([key])


def test_a_blob_read_while_it_was_rewritten_is_read_again(tmp_path: Path) -> None:
    store = ScriptedReadsStore(blob_key(digest_bytes(b"bravo")), torn_reads=1)
    ref = committed(tmp_path, {"b.txt": b"bravo"}, store=store)
    assert sync_artifact(ref, tmp_path / "dest") == SyncStats(files_copied=1, files_unchanged=0, bytes_copied=5)
    assert files_under(tmp_path / "dest") == {"b.txt": b"bravo"}


def test_a_corrupted_blob_removed_before_it_can_be_quarantined_is_reported_without_a_move(tmp_path: Path) -> None:
    key = blob_key(digest_bytes(b"bravo"))
    store = ScriptedReadsStore(key, torn_reads=2, removed_after=2)
    ref = committed(tmp_path, {"b.txt": b"bravo"}, store=store)
    with pytest.raises(DamagedArtifact) as caught:
        sync_artifact(ref, tmp_path / "dest")
    assert str(caught.value) == (f"artifact 'data' at {store.url(key)}: blob for 'b.txt' is corrupted: read 5 "
                                 f"bytes hashing to {digest_bytes(b'BRAVO')}, manifest says 5 bytes, "
                                 f"{digest_bytes(b'bravo')}")
    assert caught.value.quarantined == ()
    assert store.list_keys(QUARANTINE) == {}
    assert read_manifest(store, ref.digest).files[0].path == "b.txt"


@pytest.mark.parametrize("length", [240, 255])
def test_a_file_whose_name_is_as_long_as_the_filesystem_allows_is_placed(tmp_path: Path, length: int) -> None:
    """The temp file written beside it must not need a longer name than the file itself."""
    files = {"d/" + "n" * (length - 4) + ".txt": b"long name"}
    ref = committed(tmp_path, files)
    dest = tmp_path / "dest"
    assert sync_artifact(ref, dest) == SyncStats(files_copied=1, files_unchanged=0, bytes_copied=9)
    assert files_under(dest) == files
