"""FsspecStore on object stores, against an in-process S3 server (moto): buckets are
checked and created only when asked (in the region asked), clients get retries, timeouts and no listing
cache, conditional writes, aborted streaming writes, bounded prefix listings, and unreachable stores."""

from __future__ import annotations

import gc
import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts.listing import PrefixListing
from skyflow.artifacts.store import FsspecStore, _default_options, open_store
from skyflow.errors import ArtifactError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_options(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}, **extra}


def new_bucket() -> str:
    return f"bucket-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_store(s3_endpoint: str) -> FsspecStore:
    return open_store(f"s3://{new_bucket()}/team/project", s3_options(s3_endpoint), create=True)


def bucket_region(store: FsspecStore) -> str | None:
    bucket = store.root.split("/", 1)[0]
    region: str | None = store.fs.call_s3("get_bucket_location", Bucket=bucket).get("LocationConstraint")
    return region


# --- buckets ---------------------------------------------------------------------------------------------------


def test_an_s3_store_on_a_missing_bucket_is_an_error_unless_create_is_set(s3_endpoint: str) -> None:
    bucket = new_bucket()
    uri = f"s3://{bucket}/team/project"
    with pytest.raises(ArtifactError) as caught:
        open_store(uri, s3_options(s3_endpoint))
    assert str(caught.value) == (f"{uri}: bucket '{bucket}' does not exist; create it, or set create: true on the "
                                 "store to let skyflow create it")
    assert caught.value.uri == uri


@pytest.mark.parametrize(("region", "location"), [(None, None), ("us-east-1", None), ("eu-west-1", "eu-west-1")])
def test_a_created_s3_bucket_is_in_the_region_asked(s3_endpoint: str, region: str | None,
                                                    location: str | None) -> None:
    bucket = new_bucket()
    store = open_store(f"s3://{bucket}/team/project", s3_options(s3_endpoint), create=True, region=region)
    assert (store.root, store.uri, store.is_local) == (f"{bucket}/team/project", f"s3://{bucket}/team/project", False)
    assert bucket_region(store) == location
    store.write_bytes("refs/x", b"ref")
    assert store.fs.cat_file(f"{bucket}/team/project/refs/x") == b"ref"
    again = open_store(f"s3://{bucket}/team/project", s3_options(s3_endpoint))  # now there: no create needed
    assert again.read_bytes("refs/x") == b"ref"


def test_an_s3_client_retries_with_backoff_times_out_and_does_not_cache_listings(s3_store: FsspecStore) -> None:
    config = s3_store.fs.s3.meta.config
    assert (config.retries, config.connect_timeout, config.read_timeout) == (
        {"mode": "standard", "total_max_attempts": 6}, 5, 60)
    assert s3_store.fs.dircache.use_listings_cache is False
    assert _default_options("s3") == {
        "config_kwargs": {"retries": {"max_attempts": 5, "mode": "standard"}, "connect_timeout": 5,
                          "read_timeout": 60},
        "use_listings_cache": False}


def test_the_default_options_of_each_kind_of_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert _default_options("gcs") == {"use_listings_cache": False}
    assert _default_options("abfs") == {"use_listings_cache": False}
    assert _default_options("file") == {"auto_mkdir": True}
    assert _default_options("memory") == {}


def test_an_unreachable_s3_store_is_reported_as_such(s3_endpoint: str) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    options = s3_options(endpoint, config_kwargs={"retries": {"max_attempts": 1}})
    with pytest.raises(ArtifactError) as caught:
        open_store("s3://nowhere/x", options)
    assert str(caught.value) == (
        "s3://nowhere/x: checking the bucket failed: the store cannot be reached (after the library's retries); "
        f'is it up? (EndpointConnectionError: Could not connect to the endpoint URL: "{endpoint}/nowhere")')


def test_listing_an_unreachable_s3_store_names_the_prefix(s3_store: FsspecStore) -> None:
    from s3fs import S3FileSystem

    endpoint = f"http://127.0.0.1:{_free_port()}"
    fs = S3FileSystem(**s3_options(endpoint, config_kwargs={"retries": {"max_attempts": 1}}), skip_instance_cache=True)
    store = FsspecStore(fs, "nowhere/x", "s3://nowhere/x")
    with pytest.raises(ArtifactError) as caught:
        store.list_keys("blobs/")
    assert str(caught.value) == (
        "s3://nowhere/x/blobs/: listing failed: the store cannot be reached (after the library's retries); "
        f'is it up? (EndpointConnectionError: Could not connect to the endpoint URL: "{endpoint}/nowhere?'
        'list-type=2&prefix=x%2Fblobs%2F&delimiter=&encoding-type=url")')


# --- objects ---------------------------------------------------------------------------------------------------


def test_s3_writes_replace_and_exclusive_writes_create_only_once(s3_store: FsspecStore) -> None:
    assert s3_store.write_bytes("refs/x", b"first") is True
    assert s3_store.write_bytes("refs/x", b"second") is True
    assert s3_store.write_bytes("locks/x", b"mine", exclusive=True) is True
    assert s3_store.write_bytes("locks/x", b"theirs", exclusive=True) is False
    assert {k: s3_store.read_bytes(k) for k in s3_store.list_keys("")} == {"refs/x": b"second", "locks/x": b"mine"}


def test_an_aborted_streaming_write_to_s3_never_appears(s3_store: FsspecStore) -> None:
    def changed_midway() -> Iterator[bytes]:
        yield b"the first part"
        raise ValueError("the bytes changed while they were read")

    with pytest.raises(ValueError, match="the bytes changed while they were read"):
        s3_store.write_chunks("blobs/x", changed_midway())
    gc.collect()  # a file object left open would commit its buffer when collected
    assert s3_store.size_of("blobs/x") is None
    assert s3_store.list_keys("") == {}


def test_s3_uploads_moves_and_touch(s3_store: FsspecStore, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"aa")
    (tmp_path / "b").write_bytes(b"bbb")
    s3_store.upload_files([(tmp_path / "a", "tmp/a"), (tmp_path / "b", "blobs/b")])
    assert s3_store.move("tmp/a", "blobs/a") is True
    assert s3_store.move("tmp/gone", "blobs/c") is False
    assert s3_store.touch(["blobs/a"]) is False
    assert {k: s3_store.read_bytes(k) for k in s3_store.list_keys("")} == {"blobs/a": b"aa", "blobs/b": b"bbb"}


# --- bounded listings ------------------------------------------------------------------------------------------


def _fill(store: FsspecStore, n: int) -> list[str]:
    keys = [f"blobs/sha256/{i:02d}" for i in range(n)]
    for i, key in enumerate(keys):
        store.write_bytes(key, b"x" * i)
    store.write_bytes("manifests/m", b"m")
    return keys


def test_a_prefix_listing_reads_to_its_budget_and_says_how_far_it_got(s3_store: FsspecStore) -> None:
    keys = _fill(s3_store, 12)
    assert s3_store.list_prefix("blobs/", wanted_keys=2) == PrefixListing(
        "blobs/", {k: i for i, k in enumerate(keys)}, None)
    assert s3_store.list_prefix("blobs/", wanted_keys=1) == PrefixListing(
        "blobs/", {k: i for i, k in enumerate(keys[:10])}, "blobs/sha256/09")
    assert s3_store.list_prefix("none/", wanted_keys=1) == PrefixListing("none/", {}, None)


def test_sizes_of_many_keys_come_from_one_listing_and_a_lookup_for_the_rest(s3_store: FsspecStore) -> None:
    keys = _fill(s3_store, 12)
    asked = [*keys, "blobs/sha256/12", "blobs/sha256/00", "manifests/m"]
    assert s3_store.sizes_of(asked) == {**{k: i for i, k in enumerate(keys)}, "blobs/sha256/12": None,
                                        "manifests/m": 1}


def test_listing_a_bucket_that_went_away_names_the_prefix(s3_endpoint: str) -> None:
    bucket = new_bucket()
    store = open_store(f"s3://{bucket}/p", s3_options(s3_endpoint), create=True)
    store.fs.call_s3("delete_bucket", Bucket=bucket)
    with pytest.raises(ArtifactError) as caught:
        store.list_prefix("blobs/", wanted_keys=8)
    assert str(caught.value) == (f"s3://{bucket}/p/blobs/: listing failed: not found "
                                 "(FileNotFoundError: The specified bucket does not exist)")
    assert store.list_keys("blobs/") == {}


# --- Google Cloud Storage (fake-gcs-server) -------------------------------------------------------------------
