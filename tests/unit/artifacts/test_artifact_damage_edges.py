"""Damage found by `skyflow artifacts verify` (a corrupted manifest, a cache entry naming what is gone), blob
re-reads that fail for a reason other than absence, manifests and records that are not of this format,
and outputs that are not where, or not what, a stage was given."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import skyflow.artifacts
from skyflow.artifacts import ArtifactRecord, ArtifactRef, CacheIndex, Manifest, commit_output, open_store
from skyflow.artifacts.integrity import check_blobs, quarantine_blob, rehash_blob
from skyflow.artifacts.manifest import digest_bytes, list_local_files
from skyflow.artifacts.refs import TransferStats, blob_key, manifest_key
from skyflow.artifacts.scrub import Damage, scrub_store
from skyflow.artifacts.store import FsspecStore
from skyflow.errors import ArtifactError


def memory_store() -> FsspecStore:
    return open_store(f"memory://damage-{uuid.uuid4().hex}")


def committed(store: FsspecStore, tmp_path: Path, name: str, data: bytes) -> ArtifactRef:
    source = tmp_path / name
    source.mkdir()
    (source / "f").write_bytes(data)
    return commit_output(store, source, name=name)


def test_verify_quarantines_a_corrupted_manifest_and_removes_entries_naming_it(tmp_path: Path) -> None:
    store = memory_store()
    good = committed(store, tmp_path, "good", b"fine")
    bad = committed(store, tmp_path, "bad", b"soon damaged")
    index = CacheIndex(store)
    index.record("uses-bad", {"out": bad})
    index.record("uses-good", {"out": good})
    key = manifest_key(bad.digest)
    store.write_bytes(key, store.read_bytes(key).replace(b'"dir"', b'"file"'))
    report = scrub_store(store)
    assert not report.ok and report.manifests == 2 and report.cache_entries == 2
    corrupted, entry = report.damage
    assert corrupted.key == key
    assert corrupted.problem.startswith(f"{store.url(key)}: manifest is corrupted: its bytes hash to sha256:")
    assert corrupted.quarantined is not None and corrupted.quarantined.startswith(f"quarantine/{key}.")
    assert entry == Damage("cache/uses-bad.json", "cache entry names a missing or damaged artifact; removed")
    assert store.read_optional("cache/uses-bad.json") is None and store.read_optional("cache/uses-good.json")
    assert scrub_store(store).ok


class VanishingEntries(FsspecStore):
    """Cache entries that a gc removes between the listing and the read."""

    def read_optional(self, key: str) -> bytes | None:
        return None if key.startswith("cache/") else super().read_optional(key)


def test_verify_skips_a_cache_entry_removed_while_it_ran(tmp_path: Path) -> None:
    base = memory_store()
    CacheIndex(base).record("k", {"out": committed(base, tmp_path, "out", b"data")})
    report = scrub_store(VanishingEntries(base.fs, base.root, base.uri))
    assert report.ok and report.cache_entries == 1


class UnreadableBlobs(FsspecStore):
    """A store that lists and sizes blobs but refuses to read them (credentials without read access)."""

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            raise PermissionError(errno.EACCES, "Access Denied")
        except PermissionError as exc:
            raise ArtifactError("reading failed: permission denied", uri=self.url(key)) from exc


def test_a_blob_that_cannot_be_read_is_an_error_not_damage(tmp_path: Path) -> None:
    base = memory_store()
    ref = committed(base, tmp_path, "out", b"data")
    store = UnreadableBlobs(base.fs, base.root, base.uri)
    with pytest.raises(ArtifactError, match="permission denied"):
        rehash_blob(store, digest_bytes(b"data"))
    manifest = Manifest.from_bytes(base.read_bytes(manifest_key(ref.digest)))
    with pytest.raises(ArtifactError, match="permission denied"):
        check_blobs(store, [manifest], rehash=True)
    assert base.read_optional(blob_key(digest_bytes(b"data"))) == b"data"  # nothing quarantined


def test_a_blob_is_quarantined_only_when_a_fresh_read_confirms_the_damage() -> None:
    store = memory_store()
    digest = digest_bytes(b"good bytes")
    assert rehash_blob(store, digest) is None  # absent
    store.write_bytes(blob_key(digest), b"good bytes")
    assert quarantine_blob(store, digest, 10) is None  # rewritten by a concurrent commit: left alone
    assert store.read_optional(blob_key(digest)) == b"good bytes"


class BlobsGoneAfterListing(FsspecStore):
    """Blobs a gc removes between the size check and the re-read."""

    def read_chunks(self, key: str) -> Iterator[bytes]:
        self.delete([key])
        return super().read_chunks(key)


def test_a_blob_gone_between_the_size_check_and_the_reread_is_missing(tmp_path: Path) -> None:
    base = memory_store()
    ref = committed(base, tmp_path, "out", b"data")
    manifest = Manifest.from_bytes(base.read_bytes(manifest_key(ref.digest)))
    found = check_blobs(BlobsGoneAfterListing(base.fs, base.root, base.uri), [manifest], rehash=True)
    assert found.bad_paths == ("f",) and found.quarantined == ()


@pytest.mark.parametrize(("data", "match"), [
    (b"not json", r"manifest is not valid JSON of this format"),
    (json.dumps({"kind": "dir", "files": [["a", "sha256:x"]]}).encode(), r"manifest is not valid JSON"),
    (json.dumps({"kind": "tree", "files": [], "version": 1}).encode(), r"unknown kind 'tree' or version 1"),
    (json.dumps({"kind": "dir", "files": [], "version": 99}).encode(), r"unknown kind 'dir' or version 99"),
])
def test_a_manifest_not_of_this_format_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        Manifest.from_bytes(data, uri="memory://x/manifests/y.json")


def test_a_record_that_is_not_a_record_is_refused() -> None:
    with pytest.raises(ArtifactError, match=r"not an artifact record: \{'name': 'x'\} \("):
        ArtifactRecord.from_json({"name": "x"})
    with pytest.raises(ArtifactError, match=r"not an artifact record: .*'size_bytes': 'big'"):
        ArtifactRecord.from_json({"name": "x", "uri": "u", "digest": "d", "size_bytes": "big"})


def test_data_outside_any_store_cannot_be_opened_as_an_artifact() -> None:
    with pytest.raises(ArtifactError, match=r"this artifact is not in a store"):
        ArtifactRef.open(ArtifactRecord("raw", "/data/raw", "sha256:" + "0" * 64))


def test_an_instant_transfer_has_no_throughput() -> None:
    assert TransferStats(bytes=5_000_000, seconds=0.0).throughput_mb_s == 0.0
    assert TransferStats(bytes=5_000_000, seconds=2.0).throughput_mb_s == 2.5


def test_an_unknown_name_in_the_artifacts_package_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'skyflow.artifacts' has no attribute 'commit_everything'"):
        skyflow.artifacts.commit_everything  # noqa: B018


def test_outputs_must_exist_and_stay_inside_their_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="output path does not exist; the stage wrote nothing there"):
        list_local_files(tmp_path / "never-written")
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("x")
    os.symlink(out / "nowhere", out / "dangling")  # points inside, at nothing: not a file, skipped
    assert list_local_files(out) == [("kept.txt", out / "kept.txt")]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    os.symlink(outside, out / "linked-dir")
    with pytest.raises(ArtifactError, match="a symlink points outside the output directory; copy the file in"):
        list_local_files(out)

