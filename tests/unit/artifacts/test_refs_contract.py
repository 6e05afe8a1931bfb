"""Where blobs and manifests live, and how an ArtifactRef opens (or reuses) its store."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from skyflow.artifacts import refs
from skyflow.artifacts.manifest import FileEntry, Manifest, digest_bytes
from skyflow.artifacts.record import ArtifactRecord
from skyflow.artifacts.refs import (
    ArtifactRef,
    blob_key,
    digest_of_blob_key,
    digest_of_manifest_key,
    manifest_key,
)
from skyflow.artifacts.store import ArtifactStore, open_store
from skyflow.errors import ArtifactError

HEX = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256 of b"hello"
DIGEST = f"sha256:{HEX}"


def test_blob_keys_fan_out_on_the_first_two_hex_digits() -> None:
    assert blob_key(DIGEST) == f"blobs/sha256/2c/{HEX}"


def test_manifest_keys_are_flat() -> None:
    assert manifest_key(DIGEST) == f"manifests/sha256/{HEX}.json"


def test_keys_give_back_their_digest() -> None:
    assert digest_of_blob_key(blob_key(DIGEST)) == DIGEST
    assert digest_of_manifest_key(manifest_key(DIGEST)) == DIGEST
    # keys as a listing under a prefix returns them
    assert digest_of_blob_key(f"some/prefix/blobs/sha256/2c/{HEX}") == DIGEST
    assert digest_of_manifest_key(f"some/prefix/manifests/sha256/{HEX}.json") == DIGEST


class FakeStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The calls ArtifactRef makes to open_store; each returns a FakeStore at the URI."""
    calls: list[tuple[str, Any]] = []

    def fake_open_store(uri: str, storage_options: dict[str, Any] | None = None, **_: Any) -> FakeStore:
        calls.append((uri, storage_options))
        return FakeStore(uri)

    monkeypatch.setattr(refs, "open_store", fake_open_store)
    return calls


def record(store_uri: str | None = "/runs/store", **fields: Any) -> ArtifactRecord:
    values: dict[str, Any] = {"name": "model", "uri": f"/runs/store/manifests/sha256/{HEX}.json",
                              "digest": DIGEST, "size_bytes": 1234, "file_count": 3}
    return ArtifactRecord(**(values | fields), store_uri=store_uri)


def test_in_store_points_at_the_manifest_and_counts_files() -> None:
    store = open_store(f"memory://refs-{uuid.uuid4().hex}")
    manifest = Manifest("dir", (FileEntry("a", digest_bytes(b"alpha"), 5), FileEntry("b", digest_bytes(b"be"), 2)))
    ref = ArtifactRef.in_store(store, manifest, name="data")
    assert ref.uri == store.url(manifest_key(manifest.digest))
    assert ref.uri.endswith(f"/manifests/sha256/{manifest.digest.split(':')[1]}.json")
    assert (ref.name, ref.digest, ref.size_bytes, ref.file_count) == ("data", manifest.digest, 7, 2)
    assert ref.store is store
    assert ref.record == ArtifactRecord(name="data", uri=ref.uri, digest=manifest.digest, size_bytes=7,
                                        store_uri=store.uri, file_count=2)


def test_a_record_outside_any_store_cannot_be_opened(opened: list[tuple[str, Any]]) -> None:
    loose = record(store_uri=None, uri="/data/inputs/train")
    with pytest.raises(ArtifactError) as caught:
        ArtifactRef.open(loose)
    assert caught.value.artifact == "model"
    assert caught.value.uri == "/data/inputs/train"
    assert caught.value.message == "artifact 'model' at /data/inputs/train: this artifact is not in a store"
    assert opened == []


def test_open_keeps_every_field_of_the_record(opened: list[tuple[str, Any]]) -> None:
    ref = ArtifactRef.open(record())
    assert (ref.name, ref.uri, ref.digest, ref.size_bytes, ref.file_count) == (
        "model", f"/runs/store/manifests/sha256/{HEX}.json", DIGEST, 1234, 3)
    assert ref.record == record()


def test_unknown_size_and_file_count_open_as_zero(opened: list[tuple[str, Any]]) -> None:
    ref = ArtifactRef.open(record(size_bytes=None, file_count=None))
    assert ref.size_bytes == 0 and type(ref.size_bytes) is int
    assert ref.file_count == 0 and type(ref.file_count) is int


@pytest.mark.parametrize(("given_uri", "record_uri"), [
    ("/runs/store-X", "/runs/store-X"),
    ("/runs/store-X/", "/runs/store-X"),
    ("/runs/store-X", "/runs/store-X/"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
])
def test_the_given_store_is_reused_when_it_is_the_records_store(
        opened: list[tuple[str, Any]], given_uri: str, record_uri: str) -> None:
    given = cast(ArtifactStore, FakeStore(given_uri))  # all ArtifactRef uses of a store: its uri and url()
    ref = ArtifactRef.open(record(store_uri=record_uri), store=given)
    assert ref.store is given
    assert opened == []


@pytest.mark.parametrize("given_uri", ["/runs/other", "/runs/store-2", "/runs/store/sub"])
def test_another_store_is_not_used_for_the_record(opened: list[tuple[str, Any]], given_uri: str) -> None:
    ref = ArtifactRef.open(record(store_uri="/runs/store"), store=FakeStore(given_uri),  # type: ignore[arg-type]
                           storage_options={"anon": True})
    assert opened == [("/runs/store", {"anon": True})]
    assert ref.store.uri == "/runs/store"


def test_the_records_store_opens_with_the_storage_options(opened: list[tuple[str, Any]]) -> None:
    ArtifactRef.open(record(store_uri="s3://bucket/prefix"), storage_options={"endpoint_url": "http://s3.local"})
    assert opened == [("s3://bucket/prefix", {"endpoint_url": "http://s3.local"})]


def test_to_dict_and_from_dict_round_trip_reusing_the_store(opened: list[tuple[str, Any]]) -> None:
    store = cast(ArtifactStore, FakeStore("/runs/store"))  # all ArtifactRef uses of a store: its uri and url()
    ref = ArtifactRef.open(record(), store=store)
    data = ref.to_dict()
    assert data == {"name": "model", "uri": f"/runs/store/manifests/sha256/{HEX}.json", "digest": DIGEST,
                    "size_bytes": 1234, "store_uri": "/runs/store", "file_count": 3}
    back = ArtifactRef.from_dict(data, store=store)
    assert back == ref
    assert back.store is store
    assert opened == []


def test_from_dict_opens_the_records_store_with_the_storage_options(opened: list[tuple[str, Any]]) -> None:
    data = record(store_uri="gs://bucket/runs").to_json()
    back = ArtifactRef.from_dict(data, storage_options={"token": "anon"})
    assert opened == [("gs://bucket/runs", {"token": "anon"})]
    assert back.record == record(store_uri="gs://bucket/runs")


def test_from_dict_refuses_what_is_not_a_record() -> None:
    with pytest.raises(ArtifactError, match="not an artifact record"):
        ArtifactRef.from_dict({"name": "model"})
