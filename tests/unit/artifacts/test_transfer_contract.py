"""Moving an artifact between stores, exactly: what lands in the target and what the stats say, what a
resumed transfer skips, and the whole error (and quarantine) when a source blob is missing or reads as
other bytes, on both paths: a small file checked in memory, a large one checked as its chunks stream."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.callbacks import Callback

from skyflow.artifacts import commit_output, open_store
from skyflow.artifacts import transfer as transfer_module
from skyflow.artifacts.commit import load_manifest
from skyflow.artifacts.integrity import DamagedArtifact
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.progress import reporting_transfers_to
from skyflow.artifacts.refs import ArtifactRef, TransferStats, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore
from skyflow.artifacts.transfer import transfer_artifact
from skyflow.errors import ArtifactError

FILES = {"a.txt": b"0123456789", "b.txt": b"abcde", "same-as-a.txt": b"0123456789"}


def local_store(tmp_path: Path, name: str) -> FsspecStore:
    store = open_store(str(tmp_path / name), create=True)
    assert isinstance(store, FsspecStore)
    return store


def committed(store: FsspecStore, tmp_path: Path, files: dict[str, bytes], name: str = "model") -> ArtifactRef:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for path, data in files.items():
        (src / path).write_bytes(data)
    return commit_output(store, src, name=name)


def store_keys(store: FsspecStore) -> set[str]:
    return set(store.list_keys(""))


def quarantined(store: FsspecStore) -> list[str]:
    return sorted(k for k in store.list_keys("") if k.startswith("quarantine/"))


@pytest.fixture(params=["in memory", "streamed"])
def path_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small files move in one read checked in memory; above WHOLE_FILE_BYTES they stream in chunks."""
    if request.param == "streamed":
        monkeypatch.setattr(transfer_module, "WHOLE_FILE_BYTES", 4)
    return str(request.param)


def test_an_artifact_moves_with_each_distinct_blob_once_and_its_manifest_last(tmp_path: Path, path_taken: str) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, FILES)
    bar = Callback()
    with reporting_transfers_to(bar):
        before = time.perf_counter()
        moved, stats = transfer_artifact(ref, target)
        elapsed = time.perf_counter() - before
    assert (stats.bytes, stats.files_copied, stats.files_skipped) == (15, 2, 0)
    assert 0 < stats.seconds <= elapsed  # the time spent inside the call, not a clock reading
    assert (bar.size, bar.value) == (15, 15)
    assert (moved.name, moved.digest, moved.store) == ("model", ref.digest, target)
    assert store_keys(target) == {manifest_key(ref.digest), blob_key(digest_bytes(b"0123456789")),
                                  blob_key(digest_bytes(b"abcde"))}
    assert target.read_bytes(blob_key(digest_bytes(b"abcde"))) == b"abcde"
    assert target.read_bytes(blob_key(digest_bytes(b"0123456789"))) == b"0123456789"
    assert load_manifest(moved) == load_manifest(ref)


def test_an_artifact_already_in_the_target_store_is_returned_as_is(tmp_path: Path) -> None:
    source = local_store(tmp_path, "source")
    ref = committed(source, tmp_path, FILES)
    before = store_keys(source)
    assert transfer_artifact(ref, open_store(str(tmp_path / "source"))) == (ref, TransferStats(bytes=0, seconds=0.0))
    assert store_keys(source) == before


def test_a_resumed_transfer_copies_only_blobs_missing_or_of_another_size(tmp_path: Path, path_taken: str) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {**FILES, "c.txt": b"xyz"})
    target.write_bytes(blob_key(digest_bytes(b"0123456789")), b"0123456789")  # there already: skipped
    target.write_bytes(blob_key(digest_bytes(b"abcde")), b"abc")  # cut short: copied again
    bar = Callback()
    with reporting_transfers_to(bar):
        _, stats = transfer_artifact(ref, target)
    assert (stats.bytes, stats.files_copied, stats.files_skipped) == (8, 2, 1)
    assert (bar.size, bar.value) == (8, 8)
    assert target.read_bytes(blob_key(digest_bytes(b"abcde"))) == b"abcde"
    assert target.read_bytes(blob_key(digest_bytes(b"xyz"))) == b"xyz"


def test_a_source_blob_that_reads_as_other_bytes_is_quarantined_and_nothing_is_committed(
        tmp_path: Path, path_taken: str) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"b.txt": b"abcde"})
    key = blob_key(digest_bytes(b"abcde"))
    source.write_bytes(key, b"abcdX!")
    with pytest.raises(DamagedArtifact) as caught:
        transfer_artifact(ref, target)
    [moved] = quarantined(source)
    assert re.fullmatch(rf"quarantine/{re.escape(key)}\.\d{{8}}T\d{{6}}Z-[0-9a-f]{{6}}", moved)
    assert source.read_bytes(moved) == b"abcdX!"
    error = caught.value
    assert (error.artifact, error.uri, error.digest, error.quarantined) == ("model", source.url(key), ref.digest,
                                                                           (moved,))
    assert error.message == (f"artifact 'model' at {source.url(key)}: "
                             f"source blob for 'b.txt' is corrupted (6 bytes hashing to {digest_bytes(b'abcdX!')}; "
                             f"the manifest says 5 bytes, {digest_bytes(b'abcde')}); nothing was copied for it; "
                             f"moved to {source.url(moved)}")
    assert store_keys(target) == set()  # no blob, and above all no manifest claiming the artifact is there


def test_a_source_blob_of_the_right_size_but_other_bytes_is_caught_too(tmp_path: Path, path_taken: str) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"b.txt": b"abcde"})
    key = blob_key(digest_bytes(b"abcde"))
    source.write_bytes(key, b"abcdX")
    with pytest.raises(DamagedArtifact) as caught:
        transfer_artifact(ref, target)
    assert caught.value.message.startswith(
        f"artifact 'model' at {source.url(key)}: source blob for 'b.txt' is corrupted (5 bytes hashing to "
        f"{digest_bytes(b'abcdX')}; ")
    assert len(quarantined(source)) == 1
    assert store_keys(target) == set()


def test_bytes_that_change_between_the_copy_and_the_fresh_read_are_not_quarantined(
        tmp_path: Path, path_taken: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error still stops the copy, but a blob that reads right the second time stays where it is."""
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"b.txt": b"abcde"})
    key = blob_key(digest_bytes(b"abcde"))
    reads = []
    real_read_bytes, real_read_chunks = source.read_bytes, source.read_chunks

    def flaky_bytes(k: str) -> bytes:
        reads.append(k)
        return b"abcdX" if len(reads) == 1 else real_read_bytes(k)

    def flaky_chunks(k: str):  # type: ignore[no-untyped-def]
        reads.append(k)
        return iter([b"abcdX"]) if len(reads) == 1 else real_read_chunks(k)

    monkeypatch.setattr(source, "read_bytes", flaky_bytes)
    monkeypatch.setattr(source, "read_chunks", flaky_chunks)
    with pytest.raises(DamagedArtifact) as caught:
        transfer_artifact(ref, target)
    assert caught.value.quarantined == ()
    assert caught.value.message.endswith("); nothing was copied for it")
    assert quarantined(source) == []
    assert real_read_bytes(key) == b"abcde"
    assert store_keys(target) == set()


def test_a_missing_source_blob_names_the_file_and_copies_nothing(tmp_path: Path, path_taken: str) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"b.txt": b"abcde"})
    key = blob_key(digest_bytes(b"abcde"))
    source.delete([key])
    with pytest.raises(DamagedArtifact) as caught:
        transfer_artifact(ref, target)
    error = caught.value
    assert (error.artifact, error.uri, error.digest, error.quarantined) == ("model", source.url(key), ref.digest, ())
    assert error.message == f"artifact 'model' at {source.url(key)}: source blob for 'b.txt' is missing; nothing " \
                            "was copied for it"
    assert isinstance(error.__cause__, ArtifactError) and isinstance(error.__cause__.__cause__, FileNotFoundError)
    assert store_keys(target) == set()


def test_a_failing_target_is_reported_as_the_targets_error_not_as_damage(tmp_path: Path, path_taken: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"b.txt": b"abcde"})
    key = blob_key(digest_bytes(b"abcde"))
    full = ArtifactError("disk full", uri=target.url(key))
    full.__cause__ = FileNotFoundError(2, "no such folder")

    def fail(*_args: object, **_kwargs: object) -> None:
        raise full

    monkeypatch.setattr(target, "write_bytes", fail)
    monkeypatch.setattr(target, "write_chunks", fail)
    with pytest.raises(ArtifactError) as caught:
        transfer_artifact(ref, target)
    assert not isinstance(caught.value, DamagedArtifact)
    assert (caught.value.message, caught.value.uri, caught.value.artifact) == (
        f"artifact 'model' at {target.url(key)}: disk full", target.url(key), "model")
    assert quarantined(source) == []


def test_a_file_of_exactly_the_whole_file_size_moves_in_one_read(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_module, "WHOLE_FILE_BYTES", 5)
    source, target = local_store(tmp_path, "source"), local_store(tmp_path, "target")
    ref = committed(source, tmp_path, {"five.txt": b"abcde", "six.txt": b"abcdef"})
    whole: list[str] = []
    streamed: list[str] = []
    real_read_bytes, real_read_chunks = source.read_bytes, source.read_chunks

    def read_bytes(key: str) -> bytes:
        whole.append(key)
        return real_read_bytes(key)

    def read_chunks(key: str) -> Iterator[bytes]:
        streamed.append(key)
        return real_read_chunks(key)

    monkeypatch.setattr(source, "read_bytes", read_bytes)
    monkeypatch.setattr(source, "read_chunks", read_chunks)
    transfer_artifact(ref, target)
    assert (whole, streamed) == ([blob_key(digest_bytes(b"abcde"))], [blob_key(digest_bytes(b"abcdef"))])
