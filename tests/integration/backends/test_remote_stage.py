"""The stage wrapper on a "node" (a subprocess here) against a real S3 server (moto): it fetches inputs,
runs setup and run, commits outputs and reports them where the backend reads them; and a SkyPilot
task's setup and run on a bare node, which install skyflow's code package before the wrapper runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRecord, commit_output, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.remote_stage import (
    SPEC_ENV,
    code_package_for,
    node_spec,
    read_result,
    remote_store_uri,
    result_key,
)
from skyflow.backends.skypilot import SkyPilotBackend
from skyflow.config import SkyPilotConfig
from skyflow.errors import BackendError
from skyflow.planner import Placement
from tests.integration.backends.kmock_cluster import bare_python

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
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    uri = s3_server.new_uri()  # type: ignore[attr-defined]
    open_store(uri, create=True)
    launch = _launch(uri, {}, ["model"])
    spec = {**node_spec(launch, uri), "setup": None, "run": "exit 7"}
    proc = subprocess.run([sys.executable, "-m", "skyflow.backends.remote_stage"],
                          env={**env, SPEC_ENV: json.dumps(spec)}, timeout=120)
    assert proc.returncode == 7
    assert read_result(uri, spec["result_key"]) is None


def test_a_local_store_is_refused_with_the_fix() -> None:
    with pytest.raises(BackendError, match=r"stage 'train' runs on kubernetes/ctx \(kubernetes\), but the pipeline "
                       r"has no object store there.*Add one to the pipeline: `stores: \{kubernetes/ctx: s3://"):
        remote_store_uri(_launch("/home/me/.skyflow/artifacts", {}, []), "kubernetes")


# -- a SkyPilot node: the task's file mounts, setup and run on a machine with nothing installed -------

@pytest.mark.parametrize("fetch", ["dir", "url"])
def test_a_skypilot_task_installs_skyflow_on_a_bare_node_and_runs_the_stage(
        fetch: str, s3_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What SkyPilot does with the task, played here: copy each file mount to the node, then run setup
    and run with the task's envs, under `env -i` with a bare python (no skyflow, no package index)."""
    aws = {k: v for k, v in _node_env(s3_server, tmp_path).items() if k.startswith("AWS_")}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    uri = s3_server.new_uri()  # type: ignore[attr-defined]
    store = open_store(uri, create=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("hello sky node\n")
    ref = commit_output(store, tmp_path / "data", name="data")
    placement = Placement(infra="aws/us-east-1", cloud="aws", region="us-east-1", zone=None, instance_type="m6i.large",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.1, hours=0.1, store_uri=uri)
    launch = launch_for(Path("."), 'tr a-z A-Z < "$SKYFLOW_INPUT_DATA/rows.txt" > "$SKYFLOW_OUTPUT_MODEL/model.txt" && '
                        'printf %s "$SKYFLOW_PYTHON" > "$SKYFLOW_OUTPUT_MODEL/python.txt"', placement=placement,
                        input_refs={"data": ref.record}, outputs={"model": Path("model")})
    backend = SkyPilotBackend(config=SkyPilotConfig.model_validate({"python": bare_python(), "code_fetch": fetch}))
    config = backend.task_config(launch, uri, node=backend.node_setup(launch, uri, ship=True))
    package = code_package_for(uri)
    assert (store.size_of(package.index_key) is not None) == (fetch == "url")  # a file mount needs no upload

    home = tmp_path / "node"
    home.mkdir()
    for dest, source in config.get("file_mounts", {}).items():
        shutil.copytree(source, home / dest.removeprefix("~/"))  # what SkyPilot's file mount does
    env = {"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1", "HOME": str(home), **aws,
           **config["envs"]}
    setup = subprocess.run(["bash", "-c", config["setup"]], env=env, cwd=home, capture_output=True, text=True,
                           timeout=600)
    assert setup.returncode == 0, setup.stderr[-4000:]
    venv = home / ".skyflow" / "env" / package.digest
    assert f"code package {package.digest} installed in {venv}" in setup.stderr
    run = subprocess.run(["bash", "-c", config["run"]], env=env, cwd=home, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"code package {package.digest} already installed in {venv}" in run.stderr

    outputs = read_result(uri, result_key(launch.run_id, launch.stage, launch.attempt))
    assert outputs is not None
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    got = fetch_artifact(ArtifactRef.open(outputs["model"], store=store), tmp_path / "back")
    assert (got / "model.txt").read_text() == "HELLO SKY NODE\n"
    assert (got / "python.txt").read_text() == str(venv / "bin" / "python")
