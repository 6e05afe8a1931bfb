"""Moving artifacts between real stores, writers killed mid-commit, stores that are down."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from skyflow.artifacts import (
    commit_output,
    fetch_artifact,
    open_store,
    transfer_artifact,
    verify_artifact,
)
from skyflow.artifacts.commit import read_manifest
from skyflow.artifacts.manifest import build_manifest, digest_bytes
from skyflow.artifacts.refs import BLOBS, MANIFESTS, blob_key, digest_of_blob_key
from skyflow.artifacts.transfer import WHOLE_FILE_BYTES
from skyflow.errors import ArtifactError

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stores")]


def random_tree(root: Path, sizes: list[int], seed: int = 7) -> Path:
    rng = random.Random(seed)
    for i, size in enumerate(sizes):
        path = root / f"part-{i // 4}" / f"shard-{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_local_to_s3_to_gcs_to_azure_keeps_every_byte(tmp_path: Path, s3_server: Any, gcs_server: Any,
                                                      azure_server: Any) -> None:
    # One file above the whole-file limit takes the streaming path on every hop.
    src = random_tree(tmp_path / "out", [1, 1000, 300_000, 2_000_000, WHOLE_FILE_BYTES + 1234])
    stores = [open_store(str(tmp_path / "local")),
              *(open_store(s.new_uri(), s.storage_options, create=True)
                for s in (s3_server, gcs_server, azure_server))]
    ref = commit_output(stores[0], src, name="corpus")
    for target in stores[1:]:
        moved, stats = transfer_artifact(ref, target)
        assert moved.digest == ref.digest and moved.uri.startswith(target.uri)
        assert (stats.bytes, stats.files_copied, stats.files_skipped) == (ref.size_bytes, 5, 0)
        assert stats.seconds > 0
        ref = moved
    assert verify_artifact(ref)
    assert tree_bytes(fetch_artifact(ref, tmp_path / "from-azure")) == tree_bytes(src)
    again, stats = transfer_artifact(ref, stores[2])
    assert (stats.bytes, stats.files_copied, stats.files_skipped) == (0, 0, 5)
    assert again.digest == ref.digest


def test_an_interrupted_transfer_resumes_file_by_file(tmp_path: Path, s3_server: Any,
                                                      gcs_server: Any) -> None:
    src = random_tree(tmp_path / "out", [50_000] * 8)
    s3 = open_store(s3_server.new_uri(), s3_server.storage_options, create=True)
    gcs = open_store(gcs_server.new_uri(), gcs_server.storage_options, create=True)
    ref = commit_output(s3, src, name="shards")
    manifest = read_manifest(s3, ref.digest)
    # What a transfer killed after three files leaves behind: three blobs and no manifest.
    for entry in manifest.files[:3]:
        gcs.write_bytes(blob_key(entry.digest), s3.read_bytes(blob_key(entry.digest)))
    assert gcs.list_keys(MANIFESTS) == {}
    moved, stats = transfer_artifact(ref, gcs)
    assert (stats.files_copied, stats.files_skipped, stats.bytes) == (5, 3, 5 * 50_000)
    assert verify_artifact(moved)


def test_a_corrupted_source_blob_is_not_copied(tmp_path: Path, s3_server: Any, gcs_server: Any) -> None:
    src = random_tree(tmp_path / "out", [10_000] * 3)
    s3 = open_store(s3_server.new_uri(), s3_server.storage_options, create=True)
    gcs = open_store(gcs_server.new_uri(), gcs_server.storage_options, create=True)
    ref = commit_output(s3, src, name="shards")
    bad = read_manifest(s3, ref.digest).files[1]
    s3.write_bytes(blob_key(bad.digest), b"\0" * bad.size_bytes)
    with pytest.raises(ArtifactError, match=r"artifact 'shards' at s3://.*source blob for 'part-0/shard-001.bin' "
                                            r"is corrupted"):
        transfer_artifact(ref, gcs)
    assert gcs.size_of(blob_key(bad.digest)) is None
    assert gcs.list_keys(MANIFESTS) == {}


WRITER = """
import json, sys
from skyflow.artifacts import commit_output, open_store
uri, options, src = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
commit_output(open_store(uri, options, create=True, workers=2), src, name="checkpoint")
"""


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_writer_killed_mid_commit_leaves_no_visible_artifact(kind: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    if kind == "local":
        uri, options = str(tmp_path / "store"), {}
    else:
        server = request.getfixturevalue("s3_server")
        uri, options = server.new_uri(), server.storage_options
    src = random_tree(tmp_path / "out", [1 << 20] * 160)
    store = open_store(uri, options, create=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, uri, json.dumps(options), str(src)],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not store.list_keys(BLOBS) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    blobs = store.list_keys(BLOBS)
    assert 0 < len(blobs) < 160
    assert store.list_keys(MANIFESTS) == {}
    manifest, _ = build_manifest(src)
    with pytest.raises(ArtifactError, match="artifact not found"):
        read_manifest(store, manifest.digest)
    for key in blobs:  # every blob that is visible is whole
        assert manifest_digest_of(store, key) == digest_of_blob_key(key)
    ref = commit_output(store, src, name="checkpoint")  # a rerun completes the commit
    assert ref.digest == manifest.digest and verify_artifact(ref)


def manifest_digest_of(store: Any, key: str) -> str:
    return digest_bytes(store.read_bytes(key))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_store_that_is_down_is_an_artifact_error_naming_uri_and_cause(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint},
               "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 1}}
    with pytest.raises(ArtifactError, match=r"s3://bucket/root: checking the bucket failed: the store "
                                            r"cannot be reached"):
        open_store("s3://bucket/root", options)


def test_a_missing_bucket_is_created_only_when_allowed_and_in_its_region(s3_server: Any) -> None:
    uri = s3_server.new_uri()
    bucket = uri.split("://")[1].split("/")[0]
    with pytest.raises(ArtifactError, match=f"bucket '{bucket}' does not exist; .*create: true"):
        open_store(uri, s3_server.storage_options)
    open_store(uri, s3_server.storage_options, create=True, region="eu-west-1")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
