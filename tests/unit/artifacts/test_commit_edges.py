"""Committing large files to an object store while something still writes them, blobs reused and then
removed by a concurrent gc, manifests rewritten under a reader, and the blob check helpers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from skyflow.artifacts import commit as commit_module
from skyflow.artifacts.commit import (
    commit_output,
    find_corrupted_blobs,
    find_missing_blobs,
    read_manifest,
    write_manifest,
)
from skyflow.artifacts.manifest import FileEntry, Manifest, digest_bytes, hash_file
from skyflow.artifacts.refs import blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore, open_store
from skyflow.errors import ArtifactError


class RecordingStore(FsspecStore):
    """A memory store that remembers which keys were written."""

    def __init__(self, uri: str) -> None:
        base = open_store(uri)
        super().__init__(base.fs, base.root, base.uri)
        self.written: list[str] = []

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        self.written.append(key)
        return super().write_bytes(key, data, exclusive=exclusive)

    def write_chunks(self, key: str, chunks: object) -> None:
        self.written.append(key)
        super().write_chunks(key, chunks)  # type: ignore[arg-type]


def recording_store() -> RecordingStore:
    return RecordingStore(f"memory://commit-{uuid.uuid4().hex}")


@pytest.fixture
def large_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as large: hashed first, then streamed (never held whole)."""
    monkeypatch.setattr(commit_module, "INLINE_BYTES", 0)


def output_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def rewriting_after_hash(monkeypatch: pytest.MonkeyPatch, path: Path, new_bytes: bytes) -> None:
    """The file is written again right after skyflow hashed it (a process the stage left behind)."""
    real_hash = hash_file

    def hash_then_rewrite(hashed: Path) -> tuple[str, int]:
        found = real_hash(hashed)
        if hashed == path:
            path.write_bytes(new_bytes)
        return found

    monkeypatch.setattr(commit_module, "hash_file", hash_then_rewrite)


@pytest.mark.usefixtures("large_files")
def test_a_large_file_rewritten_during_its_upload_is_stored_as_the_bytes_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = recording_store()
    out = output_dir(tmp_path, {"model.bin": b"old weights"})
    rewriting_after_hash(monkeypatch, out / "model.bin", b"new weights, longer")
    ref = commit_output(store, out, name="model")
    entry = read_manifest(store, ref.digest).files[0]
    assert entry.digest == digest_bytes(b"new weights, longer") and entry.size_bytes == 19
    assert store.read_bytes(blob_key(entry.digest)) == b"new weights, longer"
    assert store.size_of(blob_key(digest_bytes(b"old weights"))) is None  # nothing landed under the old name
    assert store.list_keys("tmp") == {}


@pytest.mark.usefixtures("large_files")
def test_large_files_with_the_same_bytes_are_uploaded_once(tmp_path: Path) -> None:
    store = recording_store()
    ref = commit_output(store, output_dir(tmp_path, {"a": b"same bytes", "b": b"same bytes"}), name="twins")
    blob = blob_key(digest_bytes(b"same bytes"))
    assert [e.digest for e in read_manifest(store, ref.digest).files] == [digest_bytes(b"same bytes")] * 2
    assert store.written.count(blob) == 1


@pytest.mark.usefixtures("large_files")
def test_a_large_file_the_store_has_is_not_uploaded_again(tmp_path: Path) -> None:
    store = recording_store()
    blob = blob_key(digest_bytes(b"checkpoint"))
    store.write_bytes(blob, b"checkpoint")
    store.written.clear()
    commit_output(store, output_dir(tmp_path, {"ckpt": b"checkpoint"}), name="ckpt")
    assert blob not in store.written and len(store.written) == 1  # only the manifest


@pytest.mark.usefixtures("large_files")
def test_a_reused_blob_removed_by_gc_meanwhile_is_put_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = recording_store()
    blob = blob_key(digest_bytes(b"checkpoint"))
    store.write_bytes(blob, b"checkpoint")
    real_write = commit_module.write_manifest

    def gc_then_write(target: FsspecStore, manifest: Manifest) -> None:
        target.delete([blob])  # a gc that listed the store before this manifest existed
        real_write(target, manifest)

    monkeypatch.setattr(commit_module, "write_manifest", gc_then_write)
    commit_output(store, output_dir(tmp_path, {"ckpt": b"checkpoint"}), name="ckpt")
    assert store.read_bytes(blob) == b"checkpoint"


@pytest.mark.usefixtures("large_files")
def test_a_removed_blob_whose_file_changed_too_is_a_clear_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = recording_store()
    blob = blob_key(digest_bytes(b"checkpoint"))
    store.write_bytes(blob, b"checkpoint")
    out = output_dir(tmp_path, {"ckpt": b"checkpoint"})
    real_write = commit_module.write_manifest

    def gc_and_writer_then_write(target: FsspecStore, manifest: Manifest) -> None:
        target.delete([blob])
        (out / "ckpt").write_bytes(b"checkpoint, still being written")
        real_write(target, manifest)

    monkeypatch.setattr(commit_module, "write_manifest", gc_and_writer_then_write)
    with pytest.raises(ArtifactError, match=r"the file changed while it was being committed and its stored copy "
                                            r"was removed meanwhile; a process of the stage may still be writing"):
        commit_output(store, out, name="ckpt")
    assert store.size_of(blob) is None  # no blob under a name its bytes do not have


class VanishingManifestStore(RecordingStore):
    """The conditional create finds a manifest, which a gc removes before it can be read."""

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        if exclusive:
            self.written.append(key)
            return False
        return super().write_bytes(key, data)


def test_a_manifest_gone_between_create_and_read_is_written_without_quarantine() -> None:
    store = VanishingManifestStore(f"memory://commit-{uuid.uuid4().hex}")
    manifest = Manifest("file", (FileEntry("f", digest_bytes(b"x"), 1),))
    write_manifest(store, manifest)
    assert store.read_bytes(manifest_key(manifest.digest)) == manifest.to_bytes()
    assert store.list_keys("quarantine") == {}


class RewrittenOnceStore(RecordingStore):
    """The first read of a manifest sees bytes a concurrent commit is replacing; the next read the final ones."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.torn_reads = 1

    def read_optional(self, key: str) -> bytes | None:
        if self.torn_reads:
            self.torn_reads -= 1
            return b'{"torn": '
        return super().read_optional(key)


def test_a_manifest_read_while_it_is_rewritten_is_read_again_not_quarantined() -> None:
    store = RewrittenOnceStore(f"memory://commit-{uuid.uuid4().hex}")
    manifest = Manifest("file", (FileEntry("f", digest_bytes(b"x"), 1),))
    store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes())
    assert read_manifest(store, manifest.digest) == manifest
    assert store.list_keys("quarantine") == {}


def test_the_blob_checks_tell_missing_from_corrupted() -> None:
    store = recording_store()
    files = {"present": b"fine", "absent": b"never stored", "resized": b"short", "flipped": b"same size"}
    for name, data in files.items():
        if name == "absent":
            continue
        store.write_bytes(blob_key(digest_bytes(data)), data)
    store.write_bytes(blob_key(digest_bytes(b"short")), b"longer now")
    store.write_bytes(blob_key(digest_bytes(b"same size")), b"SAME SIZE")
    manifest = Manifest("dir", tuple(FileEntry(n, digest_bytes(d), len(d)) for n, d in sorted(files.items())))
    assert find_missing_blobs(store, manifest) == ["absent", "resized"]  # sizes only: a flipped byte passes
    assert find_corrupted_blobs(store, manifest) == ["absent", "flipped", "resized"]  # bytes re-hashed
    assert len(store.list_keys("quarantine")) == 2
