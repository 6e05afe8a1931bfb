"""Artifacts against real stores: local disk, S3 (moto), GCS (fake-gcs-server), Azure (Azurite)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import (
    ArtifactRef,
    CacheIndex,
    DamagedArtifact,
    collect_garbage,
    commit_output,
    fetch_artifact,
    open_store,
    sync_artifact,
    verify_artifact,
)
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.refs import BLOBS, MANIFESTS, blob_key, manifest_key
from skyflow.errors import ArtifactError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stores")]


def make_tree(root: Path, *, files: int = 6, size: int = 3000, seed: int = 0) -> Path:
    """A directory with nesting, an empty file and two files with the same bytes."""
    rng = __import__("random").Random(seed)
    for i in range(files):
        path = root / f"d{i % 3}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size + i))
    (root / "empty").write_bytes(b"")
    (root / "same-a.txt").write_text("identical\n")
    (root / "same-b.txt").write_text("identical\n")
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(store_uri_and_options: tuple[str, dict[str, Any]]) -> Any:
    uri, options = store_uri_and_options
    return open_store(uri, options, create=True)


def test_commit_then_fetch_returns_the_same_bytes(store: Any, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "out")
    ref = commit_output(store, src, name="dataset")
    assert ref.file_count == 9
    assert ref.size_bytes == sum(len(b) for b in tree_bytes(src).values())
    assert verify_artifact(ref)
    dest = fetch_artifact(ref, tmp_path / "in")
    assert tree_bytes(dest) == tree_bytes(src)


def test_same_bytes_are_stored_once(store: Any, tmp_path: Path) -> None:
    first = commit_output(store, make_tree(tmp_path / "a"), name="a")
    blobs_before = {k: i.size_bytes for k, i in store.list_keys(BLOBS).items()}
    second = commit_output(store, make_tree(tmp_path / "b"), name="b")
    assert second.digest == first.digest
    assert {k: i.size_bytes for k, i in store.list_keys(BLOBS).items()} == blobs_before
    assert len(blobs_before) == 8  # nine files, two of them with the same bytes


def test_a_manifest_is_created_once_with_a_conditional_write(store: Any) -> None:
    key = manifest_key(digest_bytes(b"x"))
    assert store.write_bytes(key, b"first", exclusive=True)
    assert not store.write_bytes(key, b"second", exclusive=True)
    assert store.read_bytes(key) == b"first"


def test_a_single_file_output_comes_back_as_that_file(store: Any, tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(os.urandom(5000))
    ref = commit_output(store, model, name="model")
    path = fetch_artifact(ref, tmp_path / "in")
    assert path == (tmp_path / "in" / "model.safetensors").resolve()
    assert path.read_bytes() == model.read_bytes()


def test_a_corrupted_blob_is_detected_quarantined_and_healed_by_the_next_commit(store: Any, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "out")
    ref = commit_output(store, src, name="dataset")
    victim = (src / "d1" / "f1.bin").read_bytes()
    key = blob_key(digest_bytes(victim))
    store.write_bytes(key, bytes(b ^ 0xFF for b in victim))  # same size, other bytes
    assert verify_artifact(ref, deep=False)  # sizes still match: only re-hashing can tell
    with pytest.raises(DamagedArtifact, match=r"blob for 'd1/f1.bin' is corrupted: .*moved to .*/quarantine/"):
        fetch_artifact(ref, tmp_path / "in")
    assert not (tmp_path / "in" / "d1" / "f1.bin").exists()
    assert not [p for p in (tmp_path / "in").rglob("*.part")]
    assert store.size_of(key) is None
    assert [k.split(".")[0] for k in store.list_keys("quarantine")] == [f"quarantine/{key}"]
    with pytest.raises(DamagedArtifact, match=r"1 of 9 files are missing or corrupted: d1/f1.bin"):
        verify_artifact(ref)
    again = commit_output(store, src, name="dataset")  # the name is free again: the bytes are written afresh
    assert again.digest == ref.digest and verify_artifact(again, deep=True)
    assert tree_bytes(fetch_artifact(again, tmp_path / "in")) == tree_bytes(src)


def test_a_deep_verify_quarantines_what_does_not_hash_to_its_name(store: Any, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "out")
    ref = commit_output(store, src, name="dataset")
    first, second = (src / "d0" / "f0.bin").read_bytes(), (src / "d0" / "f3.bin").read_bytes()
    assert len(first) != len(second)
    same = (src / "same-a.txt").read_bytes()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_bytes(same.upper())  # the same size as "same-a.txt"
    other = commit_output(store, tmp_path / "other", name="other")
    a, b = blob_key(digest_bytes(same)), blob_key(digest_bytes(same.upper()))
    swapped_a, swapped_b = store.read_bytes(b), store.read_bytes(a)
    store.write_bytes(a, swapped_a)
    store.write_bytes(b, swapped_b)  # two blobs of the same size swapped
    assert verify_artifact(ref, deep=False) and verify_artifact(other, deep=False)
    with pytest.raises(DamagedArtifact, match=r"2 of 9 files are missing or corrupted: same-a.txt, same-b.txt"):
        verify_artifact(ref)
    with pytest.raises(DamagedArtifact, match=r"1 of 1 files are missing or corrupted: x"):
        verify_artifact(other)
    assert store.size_of(a) is None and store.size_of(b) is None
    assert len(store.list_keys("quarantine")) == 2


def test_a_deleted_blob_is_a_cache_miss_not_a_stale_hit(store: Any, tmp_path: Path) -> None:
    ref = commit_output(store, make_tree(tmp_path / "out"), name="dataset")
    index = CacheIndex(store)
    index.record("stagekey1", {"dataset": ref})
    hit = index.lookup("stagekey1")
    assert hit is not None and hit["dataset"].digest == ref.digest
    store.delete([blob_key(digest_bytes((tmp_path / "out" / "d0" / "f0.bin").read_bytes()))])
    assert index.lookup("stagekey1") is None
    with pytest.raises(ArtifactError, match=r"missing or corrupted: d0/f0\.bin"):
        verify_artifact(ref, deep=False)


def test_gc_keeps_what_is_kept_and_shared_blobs(store: Any, tmp_path: Path) -> None:
    old = commit_output(store, make_tree(tmp_path / "old", seed=1), name="old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "same-a.txt").write_text("identical\n")  # shared with "old"
    new = commit_output(store, tmp_path / "new", name="new")
    CacheIndex(store).record("oldkey", {"x": old})
    stats = collect_garbage(store, {new.digest}, min_age_s=0)
    assert stats.manifests_removed == 1 and stats.cache_entries_removed == 1
    assert stats.blobs_removed == 7
    assert verify_artifact(new)
    assert list(store.list_keys(MANIFESTS)) == [manifest_key(new.digest)]
    with pytest.raises(ArtifactError, match=r"artifact 'old'.*not found"):
        verify_artifact(old)


def test_incremental_sync_moves_only_changed_files(store: Any, tmp_path: Path) -> None:
    ref = commit_output(store, make_tree(tmp_path / "out"), name="dataset")
    dest = tmp_path / "in"
    first = sync_artifact(ref, dest, include=["d0/*", "*.txt"], exclude=["*/f3.bin"])
    assert sorted(tree_bytes(dest)) == ["d0/f0.bin", "same-a.txt", "same-b.txt"]
    assert first.files_copied == 3
    (dest / "d0" / "f0.bin").write_bytes(b"edited locally")
    again = sync_artifact(ref, dest, include=["d0/*", "*.txt"], exclude=["*/f3.bin"])
    assert (again.files_copied, again.files_unchanged) == (1, 2)
    assert tree_bytes(dest)["d0/f0.bin"] == (tmp_path / "out" / "d0" / "f0.bin").read_bytes()


def test_ref_survives_a_round_trip_through_plain_data(store: Any, tmp_path: Path,
                                                       store_uri_and_options: tuple[str, Any]) -> None:
    ref = commit_output(store, make_tree(tmp_path / "out"), name="dataset")
    again = ArtifactRef.from_dict(ref.to_dict(), storage_options=store_uri_and_options[1])
    assert again == ref
    assert verify_artifact(again)


def test_fetching_an_artifact_that_is_not_there_names_it(store: Any, tmp_path: Path) -> None:
    ref = commit_output(store, make_tree(tmp_path / "out"), name="dataset")
    store.delete([manifest_key(ref.digest)])
    with pytest.raises(ArtifactError, match=r"artifact 'dataset' at .*manifests/sha256/.*: artifact not found"):
        fetch_artifact(ref, tmp_path / "in")
