"""Cache entries that cannot be trusted: the old format (no key inside), malformed digests, and a store
that cannot be reached while a hit is checked (a miss, with the entry left in place)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

from skyflow.artifacts.cache import CacheIndex, entry_digests, parse_entry
from skyflow.artifacts.manifest import FileEntry, Manifest, digest_bytes
from skyflow.artifacts.refs import ArtifactRef, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore, open_store
from skyflow.errors import ArtifactError

DIGEST = "sha256:" + "d" * 64


def memory_store() -> FsspecStore:
    return open_store(f"memory://cache-{uuid.uuid4().hex}")


def committed(store: FsspecStore, data: bytes) -> ArtifactRef:
    manifest = Manifest("file", (FileEntry("f", digest_bytes(data), len(data)),))
    store.write_bytes(blob_key(digest_bytes(data)), data)
    store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes())
    return ArtifactRef.in_store(store, manifest, name="out")


def test_an_entry_of_the_old_format_is_a_miss_left_in_place() -> None:
    store = memory_store()
    committed(store, b"payload")
    old = json.dumps({"out": {"digest": DIGEST, "size_bytes": 7}}).encode()
    store.write_bytes("cache/k.json", old)
    assert CacheIndex(store).lookup("k") is None
    assert store.read_optional("cache/k.json") == old
    assert store.list_keys("quarantine") == {}


def test_entries_that_are_not_entries_are_quarantined() -> None:
    store = memory_store()
    index = CacheIndex(store)
    store.write_bytes("cache/old.json", json.dumps({"out": "sha256:not-a-dict"}).encode())
    store.write_bytes("cache/bad.json", json.dumps({"key": "bad", "outputs": {"out": {"digest": "md5:1"}}}).encode())
    assert index.lookup("old") is None and index.lookup("bad") is None
    assert store.read_optional("cache/old.json") is None and store.read_optional("cache/bad.json") is None
    assert len(store.list_keys("quarantine/cache")) == 2


def test_parse_entry_reads_each_format() -> None:
    entry = json.dumps({"key": "k", "outputs": {"out": {"digest": DIGEST}}}).encode()
    assert parse_entry(entry, "k") == {"out": DIGEST}
    assert parse_entry(json.dumps({"key": "k", "outputs": {}}).encode(), "k") is None
    assert parse_entry(json.dumps({"out": {"digest": DIGEST}}).encode(), "k") == {}


def test_entry_digests_name_what_either_format_points_at() -> None:
    assert entry_digests(json.dumps({"key": "k", "outputs": {"a": {"digest": DIGEST}}}).encode()) == [DIGEST]
    assert entry_digests(json.dumps({"a": {"digest": DIGEST}}).encode()) == [DIGEST]
    assert entry_digests(b"not json") is None
    assert entry_digests(json.dumps({"a": "no dict"}).encode()) is None
    assert entry_digests(json.dumps([1, 2]).encode()) is None


class UnreachableBlobs(FsspecStore):
    """A store whose blob listing fails, as one does when the network drops mid-check."""

    def sizes_of(self, keys: Iterable[str]) -> dict[str, int | None]:
        raise ArtifactError("listing failed: the store cannot be reached", uri=self.uri)


def test_a_store_that_cannot_be_reached_mid_check_is_a_miss_that_keeps_the_entry() -> None:
    base = memory_store()
    store = UnreachableBlobs(base.fs, base.root, base.uri)
    index = CacheIndex(store)
    index.record("k", {"out": committed(store, b"payload")})
    assert index.lookup("k") is None
    assert store.read_optional("cache/k.json") is not None
    assert CacheIndex(base).lookup("k") is not None  # the entry is good once the store answers
