"""Transfer, verify, cache and gc over fsspec's in-memory filesystem (no disk, no network)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from skyflow.artifacts import (
    ArtifactRef,
    CacheIndex,
    DamagedArtifact,
    Manifest,
    collect_garbage,
    commit_output,
    open_store,
    transfer_artifact,
    verify_artifact,
)
from skyflow.artifacts.manifest import FileEntry, digest_bytes
from skyflow.artifacts.refs import blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore
from skyflow.errors import ArtifactError


def memory_store() -> FsspecStore:
    return open_store(f"memory://unit-{uuid.uuid4().hex}")


def put_artifact(store: FsspecStore, files: dict[str, bytes], name: str = "data") -> ArtifactRef:
    manifest = Manifest("dir", tuple(FileEntry(p, digest_bytes(b), len(b)) for p, b in sorted(files.items())))
    for data in files.values():
        store.write_bytes(blob_key(digest_bytes(data)), data)
    store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes(), exclusive=True)
    return ArtifactRef.in_store(store, manifest, name=name)


def test_transfer_copies_blobs_then_manifest_and_verifies() -> None:
    src, dst = memory_store(), memory_store()
    ref = put_artifact(src, {"a": b"alpha", "b/c": b"gamma" * 100})
    moved, stats = transfer_artifact(ref, dst)
    assert stats.bytes == 505 and stats.files_copied == 2
    assert verify_artifact(moved)
    assert dst.read_bytes(manifest_key(ref.digest)) == src.read_bytes(manifest_key(ref.digest))


def test_transfer_within_one_store_moves_nothing() -> None:
    store = memory_store()
    ref = put_artifact(store, {"a": b"alpha"})
    assert transfer_artifact(ref, store) == (ref, transfer_artifact(ref, store)[1])
    assert transfer_artifact(ref, store)[1].bytes == 0


def test_a_tampered_manifest_is_detected() -> None:
    store = memory_store()
    ref = put_artifact(store, {"a": b"alpha"})
    store.write_bytes(manifest_key(ref.digest), b'{"kind":"dir","files":[],"version":1}')
    with pytest.raises(ArtifactError, match="manifest is corrupted"):
        verify_artifact(ref)


def test_cache_lookup_misses_when_the_entry_is_absent_or_unreadable() -> None:
    store = memory_store()
    index = CacheIndex(store)
    assert index.lookup("nothing") is None
    store.write_bytes("cache/broken.json", b"not json")
    assert index.lookup("broken") is None
    with pytest.raises(ArtifactError, match=r"cache key '\.\./x'"):
        index.lookup("../x")


def test_a_cache_hit_rehashes_small_outputs_and_says_what_it_checked() -> None:
    store = memory_store()
    ref = put_artifact(store, {"a": b"alpha", "b": b"beta"})
    index = CacheIndex(store)
    index.record("k", {"out": ref})
    hit = index.check("k")
    assert hit is not None and hit.checked == "1 manifest re-hashed, 2 blobs (0.0 MB) re-hashed"
    sizes_only = index.check("k", rehash_bytes=8)  # 9 bytes: above that budget, presence and sizes only
    assert sizes_only is not None and sizes_only.checked.endswith("present at their sizes (not re-read)")
    store.write_bytes(blob_key(digest_bytes(b"alpha")), b"ALPHA")
    assert index.lookup("k", deep=False) is not None  # same size: only re-hashing can tell
    assert index.lookup("k") is None  # small enough to re-hash on every hit
    assert store.size_of(blob_key(digest_bytes(b"alpha"))) is None  # the bad copy is quarantined
    assert [k.rsplit("/", 1)[-1].split(".")[0] for k in store.list_keys("quarantine")] == [
        digest_bytes(b"alpha").split(":")[1]]
    assert store.read_optional("cache/k.json") is None  # and the entry pointing at it is gone


def test_a_cache_entry_copied_over_another_is_a_miss_and_quarantined() -> None:
    store = memory_store()
    index = CacheIndex(store)
    index.record("one", {"out": put_artifact(store, {"a": b"first"})})
    index.record("two", {"out": put_artifact(store, {"a": b"second"})})
    store.write_bytes("cache/one.json", store.read_bytes("cache/two.json"))
    assert index.lookup("one") is None
    assert store.read_optional("cache/one.json") is None
    assert len(store.list_keys("quarantine/cache")) == 1
    two = index.lookup("two")
    assert two is not None and two["out"].digest != ""


def test_a_commit_replaces_a_damaged_manifest_instead_of_keeping_it(tmp_path: Path) -> None:
    store = memory_store()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"payload")
    ref = commit_output(store, tmp_path / "out", name="o")
    good = store.read_bytes(manifest_key(ref.digest))
    store.write_bytes(manifest_key(ref.digest), good.replace(b'"dir"', b'"file"'))
    with pytest.raises(DamagedArtifact, match="manifest is corrupted"):
        verify_artifact(ref)
    assert store.read_optional(manifest_key(ref.digest)) is None  # quarantined when found
    store.write_bytes(manifest_key(ref.digest), good.replace(b'"dir"', b'"file"'))
    again = commit_output(store, tmp_path / "out", name="o")
    assert again.digest == ref.digest and store.read_bytes(manifest_key(ref.digest)) == good
    assert verify_artifact(again)


def test_gc_spares_young_objects_of_a_commit_in_progress() -> None:
    store = memory_store()
    orphan = b"uploaded by a writer that has not written its manifest yet"
    store.write_bytes(blob_key(digest_bytes(orphan)), orphan)
    stats = collect_garbage(store, set(), min_age_s=3600)
    assert stats.blobs_removed == 0
    assert collect_garbage(store, set(), min_age_s=0).blobs_removed == 1
