"""Garbage collection on a real local store, object by object: what goes (unkept and old artifacts, blobs
no kept manifest lists, cache entries naming a removed artifact, old temp files), what stays (kept, young,
quarantined, reused while gc runs), the counts it reports, and a dry run that deletes nothing.

The clock is fixed and each object's modification time is set, so "old" is exact to the second."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRef, CacheIndex, Manifest, collect_garbage, open_store
from skyflow.artifacts import garbage as gc_module
from skyflow.artifacts.manifest import FileEntry, digest_bytes
from skyflow.artifacts.refs import MANIFESTS, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore, KeyInfo

NOW = 1_000_000.0
MIN_AGE_S = 100.0
CUTOFF = NOW - MIN_AGE_S
OLD = CUTOFF - 50  # long enough ago
YOUNG = CUTOFF + 1  # one second too young to go


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_module, "time", types.SimpleNamespace(time=lambda: NOW))


def aged(store: FsspecStore, key: str, when: float) -> None:
    os.utime(Path(store.root) / key, (when, when))


def artifact(store: FsspecStore, files: dict[str, bytes], when: float = OLD) -> ArtifactRef:
    """An artifact committed as a commit leaves it: blobs, then its manifest, each stamped ``when``."""
    manifest = Manifest("dir", tuple(FileEntry(p, digest_bytes(b), len(b)) for p, b in sorted(files.items())))
    for data in files.values():
        store.write_bytes(blob_key(digest_bytes(data)), data)
        aged(store, blob_key(digest_bytes(data)), when)
    store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes())
    aged(store, manifest_key(manifest.digest), when)
    return ArtifactRef.in_store(store, manifest, name="out")


class Scene:
    """A store holding one of each case; ``expected_gone`` is what a gc keeping ``keep`` removes."""

    def __init__(self, tmp_path: Path) -> None:
        store = open_store(str(tmp_path / "store"), create=True)
        assert isinstance(store, FsspecStore)
        self.store = store
        self.kept = artifact(store, {"shared": b"shared bytes", "k": b"kept only"})
        self.dead = artifact(store, {"shared": b"shared bytes", "d": b"dead only, 22 bytes.."})
        self.young = artifact(store, {"y": b"young artifact"}, when=YOUNG)
        self.at_cutoff = artifact(store, {"e": b"exactly at the cutoff"}, when=CUTOFF)
        self.orphan, self.young_orphan = b"an old blob no manifest lists", b"a blob whose manifest is coming"
        for data, when in ((self.orphan, OLD), (self.young_orphan, YOUNG)):
            store.write_bytes(blob_key(digest_bytes(data)), data)
            aged(store, blob_key(digest_bytes(data)), when)
        cache = CacheIndex(store)
        cache.record("keeps", {"model": self.kept})
        cache.record("names_a_removed_one", {"model": self.kept, "eval": self.dead})
        store.write_bytes("cache/unreadable.json", b"{not json")
        store.write_bytes("tmp/old-upload", b"x" * 7)
        aged(store, "tmp/old-upload", OLD)
        store.write_bytes("tmp/fresh-upload", b"y")
        aged(store, "tmp/fresh-upload", YOUNG)
        store.write_bytes("quarantine/blob-damaged", b"kept for a person to look at")
        aged(store, "quarantine/blob-damaged", OLD)
        self.keep = {self.kept.digest}

    def stored(self) -> set[str]:
        return set(self.store.list_keys(""))

    @property
    def expected_gone(self) -> set[str]:
        return {manifest_key(self.dead.digest), manifest_key(self.at_cutoff.digest),
                blob_key(digest_bytes(b"dead only, 22 bytes..")), blob_key(digest_bytes(b"exactly at the cutoff")),
                blob_key(digest_bytes(self.orphan)),
                "cache/names_a_removed_one.json", "cache/unreadable.json", "tmp/old-upload"}


def test_gc_removes_exactly_what_nothing_kept_references_and_counts_it(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    before = scene.stored()
    stats = collect_garbage(scene.store, scene.keep, min_age_s=MIN_AGE_S)
    assert before - scene.stored() == scene.expected_gone
    assert scene.stored() == before - scene.expected_gone  # nothing else: the young, kept and quarantined stay
    freed = len(b"dead only, 22 bytes..") + len(b"exactly at the cutoff") + len(scene.orphan)
    assert (stats.manifests_removed, stats.blobs_removed, stats.cache_entries_removed, stats.bytes_freed,
            stats.dry_run) == (2, 3, 2, freed, False)
    assert CacheIndex(scene.store).lookup("keeps") is not None  # the kept artifact still reads whole


def test_a_dry_run_counts_the_same_and_deletes_nothing(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    before = scene.stored()
    dry = collect_garbage(scene.store, scene.keep, min_age_s=MIN_AGE_S, dry_run=True)
    assert scene.stored() == before
    wet = collect_garbage(scene.store, scene.keep, min_age_s=MIN_AGE_S)
    assert (dry.manifests_removed, dry.blobs_removed, dry.cache_entries_removed, dry.bytes_freed, dry.dry_run) == (
        wet.manifests_removed, wet.blobs_removed, wet.cache_entries_removed, wet.bytes_freed, True)


def test_by_default_gc_deletes_and_spares_an_hour_of_work(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    within_the_hour = artifact(scene.store, {"h": b"committed 59 min 59 s ago"}, when=NOW - 3599)
    over_the_hour = artifact(scene.store, {"h": b"committed an hour and a second ago"}, when=NOW - 3601)
    stats = collect_garbage(scene.store, scene.keep)  # min_age_s 3600, no dry run
    assert stats.dry_run is False and stats.manifests_removed == 1
    assert manifest_key(within_the_hour.digest) in scene.stored()
    assert manifest_key(over_the_hour.digest) not in scene.stored()


class ReusedWhileCollecting(FsspecStore):
    """A commit lands between gc's first listing of the manifests and its deletes: it writes a new
    manifest (old by its time stamp, as a copied one can be) naming the orphan blob, and refreshes the
    dead artifact's manifest, as a local commit reusing it does."""

    def __init__(self, base: FsspecStore, commit: Callable[[], None]) -> None:
        super().__init__(base.fs, base.root, base.uri)
        self.listings, self.commit = 0, commit

    def list_keys(self, prefix: str) -> dict[str, KeyInfo]:
        if prefix == MANIFESTS:
            self.listings += 1
            if self.listings == 2:
                self.commit()
        return super().list_keys(prefix)


def test_a_commit_that_lands_while_gc_runs_keeps_what_it_reuses(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    late: list[ArtifactRef] = []

    def commit() -> None:
        late.append(artifact(scene.store, {"o": scene.orphan}))
        aged(scene.store, manifest_key(scene.dead.digest), NOW)

    store = ReusedWhileCollecting(scene.store, commit)
    stats = collect_garbage(store, scene.keep, min_age_s=MIN_AGE_S)
    left = scene.stored()
    assert store.listings == 2 and late
    assert {manifest_key(late[0].digest), blob_key(digest_bytes(scene.orphan))} <= left
    assert {manifest_key(scene.dead.digest), blob_key(digest_bytes(b"dead only, 22 bytes.."))} <= left
    assert scene.expected_gone - left == {manifest_key(scene.at_cutoff.digest),
                                          blob_key(digest_bytes(b"exactly at the cutoff")),
                                          "cache/names_a_removed_one.json", "cache/unreadable.json", "tmp/old-upload"}
    assert (stats.manifests_removed, stats.blobs_removed) == (1, 1)
    assert stats.bytes_freed == len(b"exactly at the cutoff")


def test_a_manifest_that_cannot_be_read_lists_no_blobs_and_gc_goes_on(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    scene.store.write_bytes(manifest_key(scene.kept.digest), b"damaged")
    aged(scene.store, manifest_key(scene.kept.digest), OLD)
    collect_garbage(scene.store, scene.keep, min_age_s=MIN_AGE_S)
    left = scene.stored()
    assert manifest_key(scene.kept.digest) not in left
    assert [k for k in left if k.startswith("quarantine/manifests/")]  # moved aside to be looked at, not deleted
    assert blob_key(digest_bytes(b"kept only")) not in left  # no readable manifest names it any more
    assert blob_key(digest_bytes(b"shared bytes")) not in left
