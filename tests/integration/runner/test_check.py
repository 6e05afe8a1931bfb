"""`skyflow check` against what this test sets up: credentials, a kubeconfig, an SSH pool whose host
answers and one that does not, a reachable S3 store (moto) and a missing bucket, the lineage store."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import open_store
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration


def _listening() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


def test_check_reports_each_thing_with_a_fix(skyflow: Skyflow, s3_server: Any, tmp_path: Path) -> None:
    server, up = _listening()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]  # bound, never listening: connections are refused
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text("apiVersion: v1\nkind: Config\ncontexts:\n- name: lab\n  context: {cluster: lab}\n")
        skyflow.home.mkdir(parents=True, exist_ok=True)
        (skyflow.home / "config.yaml").write_text(
            f"ssh_pools:\n  up: {{hosts: ['127.0.0.1:{up}']}}\n  down: {{hosts: ['127.0.0.1:{down}']}}\n"
            f"kubernetes:\n  kubeconfig: {kubeconfig}\n  contexts:\n    lab: {{}}\n    gke-prod: {{}}\n")
        bucket = s3_server.new_uri()
        open_store(bucket, s3_server.storage_options, create=True)
        skyflow.write("p.yaml", f"name: p\nstores:\n  aws/us-east-1: {{uri: '{bucket}'}}\n"
                      "  gcp: {uri: 's3://no-such-bucket-here/x'}\nstages:\n  a: {run: 'true'}\n")
        env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "RUNPOD_API_KEY": "x"}
        result = skyflow("check", "p.yaml", "--json", env=env, check=True)
        text = skyflow("check", env=env, check=True).stdout
    server.close()
    found = {(f["kind"], f["name"]): f for f in json.loads(result.stdout)}
    assert found[("cloud", "aws")]["ok"] and found[("cloud", "runpod")]["ok"]
    assert not found[("cloud", "gcp")]["ok"] and "gcloud auth" in found[("cloud", "gcp")]["fix"]
    assert found[("ssh", "ssh/up")]["ok"]
    assert not found[("ssh", "ssh/down")]["ok"] and f"127.0.0.1:{down}" in found[("ssh", "ssh/down")]["detail"]
    assert found[("kubernetes", "lab")]["ok"]
    assert not found[("kubernetes", "gke-prod")]["ok"] and "it has lab" in found[("kubernetes", "gke-prod")]["detail"]
    assert found[("store", "aws/us-east-1")]["ok"]
    assert not found[("store", "gcp")]["ok"] and "credentials" in found[("store", "gcp")]["fix"]
    assert found[("lineage", "mlflow")]["ok"]
    assert "no  cloud gcp" in text and "ok  ssh ssh/up" in text


def test_check_names_a_damaged_state_db_and_a_ray_cluster_that_does_not_answer(skyflow: Skyflow) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]
        skyflow.home.mkdir(parents=True, exist_ok=True)
        (skyflow.home / "config.yaml").write_text(f"ray_clusters:\n  lab: {{address: 'http://127.0.0.1:{down}'}}\n")
        (skyflow.home / "state.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)  # a damaged database
        found = {(f["kind"], f["name"]): f for f in json.loads(skyflow("check", "--json", check=True).stdout)}
    ray, state = found[("ray", "ray/lab")], found[("state", "runs")]
    assert not ray["ok"] and f"127.0.0.1:{down}" in ray["detail"] and "ray start" in ray["fix"]
    assert not state["ok"] and "damaged" in state["detail"]
    assert state["fix"].startswith(f"move it aside to start afresh (`mv {skyflow.home / 'state.db'}")
