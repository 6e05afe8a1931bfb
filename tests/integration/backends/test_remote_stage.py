"""The stage wrapper on a "node" (a subprocess here) against a real S3 server (moto): it fetches inputs,
runs setup and run, commits outputs and reports them where the backend reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRecord, commit_output, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.remote_stage import SPEC_ENV, node_spec, read_result, remote_store_uri
from skyflow.errors import BackendError
from skyflow.planner import Placement

pytestmark = pytest.mark.integration


def _launch(store_uri: str | None, input_refs: dict[str, ArtifactRecord], outputs: list[str]) -> StageLaunch:
    placement = Placement(infra="kubernetes/ctx", cloud="kubernetes", region="ctx", zone=None, instance_type="",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0,
                          store_uri=store_uri)
    return launch_for(Path("."), 'cat "$SKYFLOW_INPUT_DATA/rows.txt" | tr a-z A-Z > "$SKYFLOW_OUTPUT_MODEL/model.txt"',
                      setup="echo setting-up > setup.txt", attempt=2, placement=placement, input_refs=input_refs,
                      outputs={o: Path(o) for o in outputs})


def _node_env(s3_server: object, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",  # type: ignore[attr-defined]
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "SKYFLOW_NODE_ROOT": str(tmp_path / "node")}


def test_node_fetches_runs_commits_and_reports(s3_server: object, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env = _node_env(s3_server, tmp_path)
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    uri = s3_server.new_uri()  # type: ignore[attr-defined]
    store = open_store(uri, create=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("hello node\n")
    ref = commit_output(store, tmp_path / "data", name="data")
    launch = _launch(uri, {"data": ref.record}, ["model"])
    spec = node_spec(launch, remote_store_uri(launch, "kubernetes"))
    proc = subprocess.run([sys.executable, "-m", "skyflow.backends.remote_stage"], env={**env, SPEC_ENV:
                          json.dumps(spec)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    outputs = read_result(uri, spec["result_key"])
    assert outputs is not None and set(outputs) == {"model"}
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    assert outputs["model"].store_uri == uri
    got = fetch_artifact(ArtifactRef.open(outputs["model"], store=store), tmp_path / "back")
    assert (got / "model.txt").read_text() == "HELLO NODE\n"
    assert (tmp_path / "node" / "setup.txt").read_text() == "setting-up\n"


def test_failing_run_reports_its_exit_code_and_no_result(s3_server: object, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = _node_env(s3_server, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    uri = s3_server.new_uri()  # type: ignore[attr-defined]
    open_store(uri, create=True)
    launch = _launch(uri, {}, ["model"])
    spec = {**node_spec(launch, uri), "setup": None, "run": "exit 7"}
    proc = subprocess.run([sys.executable, "-m", "skyflow.backends.remote_stage"],
                          env={**env, SPEC_ENV: json.dumps(spec)}, timeout=120)
    assert proc.returncode == 7
    assert read_result(uri, spec["result_key"]) is None


def test_a_local_store_is_refused_with_the_fix() -> None:
    with pytest.raises(BackendError, match=r"Add an object store to the pipeline.*s3://"):
        remote_store_uri(_launch("/home/me/.skyflow/artifacts", {}, []), "kubernetes")
