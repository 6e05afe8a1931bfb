"""`skyflow artifacts verify` over a whole store: the exact report (counts, depth, every damaged object with
its problem and where it was moved), what a deep check finds that a shallow one cannot, and which cache
entries are kept, removed or quarantined."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from skyflow.artifacts.cache import CacheIndex
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.refs import blob_key, manifest_key
from skyflow.artifacts.scrub import Damage, ScrubReport, scrub_store
from skyflow.artifacts.store import FsspecStore, open_store
from tests.unit.artifacts.test_cache_contract import put_artifact

STAMP = r"\d{8}T\d{6}Z-[0-9a-f]{6}"


def memory_store() -> FsspecStore:
    return open_store(f"memory://scrub-contract-{uuid.uuid4().hex}")


def test_a_whole_store_reports_its_counts_and_no_damage() -> None:
    store = memory_store()
    first = put_artifact(store, {"a": b"alpha", "b": b"beta"})
    second = put_artifact(store, {"a": b"alpha", "c": b"gamma!"})
    CacheIndex(store).record("k", {"first": first, "second": second})
    report = scrub_store(store)
    assert report == ScrubReport(store=store.uri, deep=False, manifests=2, blobs=3, total_bytes=15,
                                 cache_entries=1, damage=())
    assert report.ok


def test_a_deep_check_finds_bytes_of_the_right_size_that_a_shallow_one_trusts() -> None:
    store = memory_store()
    ref = put_artifact(store, {"a": b"alpha", "b": b"beta"})
    CacheIndex(store).record("k", {"out": ref})
    bad_key = blob_key(digest_bytes(b"alpha"))
    store.write_bytes(bad_key, b"ALPHA")
    assert scrub_store(store).ok
    report = scrub_store(store, deep=True)
    moved = report.damage[1].quarantined
    assert moved is not None and re.fullmatch(rf"quarantine/{bad_key}\.{STAMP}", moved)
    assert report == ScrubReport(store=store.uri, deep=True, manifests=1, blobs=2, total_bytes=9, cache_entries=1,
                                 damage=(Damage(manifest_key(ref.digest), "1 of 2 files missing or corrupted: a"),
                                         Damage(bad_key, "blob does not hash to its name", moved),
                                         Damage("cache/k.json", "cache entry names a missing or damaged artifact; "
                                                "removed")))
    assert store.read_bytes(moved) == b"ALPHA"
    assert store.read_optional(bad_key) is None and store.read_optional("cache/k.json") is None


@pytest.mark.parametrize(("missing", "shown"), [
    (5, "f0, f1, f2, f3, f4"),
    (6, "f0, f1, f2, f3, f4 and 1 more"),
    (8, "f0, f1, f2, f3, f4 and 3 more"),
])
def test_an_artifact_missing_blobs_names_the_first_five_files_and_counts_the_rest(missing: int, shown: str) -> None:
    store = memory_store()
    ref = put_artifact(store, {f"f{i}": f"file {i}".encode() for i in range(missing)} | {"z": b"kept"})
    store.delete([blob_key(digest_bytes(f"file {i}".encode())) for i in range(missing)])
    report = scrub_store(store)
    assert report.damage == (Damage(manifest_key(ref.digest),
                                    f"{missing} of {missing + 1} files missing or corrupted: {shown}"),)
    assert (report.blobs, report.total_bytes) == (missing + 1, 6 * missing + 4)


class VanishingManifests(FsspecStore):
    """Manifests that a gc removes between the listing and the read."""

    def read_optional(self, key: str) -> bytes | None:
        return None if key.startswith("manifests/") else super().read_optional(key)


def test_a_manifest_gone_when_read_is_reported_as_not_found_and_not_moved() -> None:
    base = memory_store()
    ref = put_artifact(base, {"a": b"alpha"})
    store = VanishingManifests(base.fs, base.root, base.uri)
    key = manifest_key(ref.digest)
    report = scrub_store(store)
    assert report.damage == (Damage(key, f"{store.url(key)}: artifact not found: no manifest with this digest in "
                                         "the store; was it committed here, or removed by garbage collection?"),)
    assert report.manifests == 1 and report.blobs == 0


def test_an_entry_copied_over_another_is_quarantined_with_its_bytes() -> None:
    store = memory_store()
    index = CacheIndex(store)
    index.record("one", {"out": put_artifact(store, {"a": b"first"})})
    index.record("two", {"out": put_artifact(store, {"a": b"second"})})
    copied = store.read_bytes("cache/two.json")
    store.write_bytes("cache/one.json", copied)
    report = scrub_store(store)
    moved = report.damage[0].quarantined
    assert moved is not None and re.fullmatch(rf"quarantine/cache/one\.json\.{STAMP}", moved)
    assert report.damage == (Damage("cache/one.json", "not a cache entry for this key (copied over from another, or "
                                                      "unreadable)", moved),)
    assert store.read_bytes(moved) == copied
    assert store.read_optional("cache/one.json") is None and store.read_optional("cache/two.json") == copied


def test_an_old_format_entry_is_kept_while_whole_and_removed_once_it_names_what_is_gone() -> None:
    store = memory_store()
    whole = put_artifact(store, {"a": b"alpha"})
    gone = put_artifact(store, {"b": b"beta"})
    store.delete([manifest_key(gone.digest)])
    for name, ref in (("old-whole", whole), ("old-gone", gone)):
        store.write_bytes(f"cache/{name}.json", json.dumps({"out": {"digest": ref.digest, "size_bytes": 5}}).encode())
    report = scrub_store(store)
    assert report.damage == (Damage("cache/old-gone.json", "cache entry names a missing or damaged artifact; removed"),)
    assert store.read_optional("cache/old-gone.json") is None
    assert store.read_optional("cache/old-whole.json") is not None


def test_a_file_under_cache_that_is_not_an_entry_is_quarantined() -> None:
    store = memory_store()
    store.write_bytes("cache/notes.json", b'{"note": "see digest.txt"}')
    (damage,) = scrub_store(store).damage
    assert damage.key == "cache/notes.json" and damage.quarantined is not None
    assert store.read_bytes(damage.quarantined) == b'{"note": "see digest.txt"}'


def test_a_stray_file_among_the_manifests_is_reported_and_moved_aside() -> None:
    store = memory_store()
    put_artifact(store, {"a": b"alpha"})
    store.write_bytes("manifests/sha256/.DS_Store", b"\x00\x00\x00\x01Bud1")
    report = scrub_store(store)
    moved = report.damage[0].quarantined
    assert moved is not None and re.fullmatch(rf"quarantine/manifests/sha256/\.DS_Store\.{STAMP}", moved)
    assert report.damage == (Damage("manifests/sha256/.DS_Store",
                                    f"{store.url('manifests/sha256/.DS_Store')}: not a manifest: manifests are "
                                    "named <sha256 hex>.json", moved),)
    assert (report.manifests, report.blobs) == (2, 1)
    assert scrub_store(store).ok
