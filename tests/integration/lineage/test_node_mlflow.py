"""A remote stage's own MLflow calls reach its run whether or not its node can reach the tracking store.

The node is the real stage wrapper in a subprocess with a remote node's environment (no shell
variables of this machine beyond PATH, the S3 credentials and what the backend sends), the
pipeline's artifact store is a real S3 server (moto), and the runner's side is the real lineage
subscriber and recorder on a sqlite MLflow store. A node that cannot reach the store (the runner's
sqlite file, or a server that does not answer) logs into a local store that comes back with the
outputs and is replayed into the stage's run; a node that reaches a tracking server logs to it directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from skyflow.artifacts import open_store
from skyflow.backends.fake import launch_for
from skyflow.backends.node_mlflow import capture_key, store_answers
from skyflow.backends.remote_stage import SPEC_ENV, node_spec, read_result, split_env
from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.planner import Placement, Plan
from skyflow.runner.events import RUN_STARTED, RunEvent
from skyflow.runner.lineage_io import LineageSubscriber, LineageWriter
from skyflow.runner.state import StageRow
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState
from tests.integration.conftest import StoreServer, free_port
from tests.integration.lineage.conftest import MlflowServer

pytestmark = pytest.mark.integration

SECRET = "node-s3cr3t-value"
PIPELINE = "name: remote-metrics\nstages:\n  train:\n    run: train\n    outputs: [model]\n"
# The stage's own MLflow calls: a metric per step, a param, a tag holding a secret, an artifact and a nested run.
STAGE = """\
python - <<'PY'
import os, mlflow
for step in range(5):
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
mlflow.log_param("lr", "0.01")
mlflow.set_tag("token", os.environ["TOKEN"])
open("curve.txt", "w").write("a curve")
mlflow.log_artifact("curve.txt", artifact_path="plots")
with mlflow.start_run(nested=True, run_name="eval"):
    mlflow.log_metric("win_rate", 0.75)
mlflow.end_run()
PY
echo weights > "$SKYFLOW_OUTPUT_MODEL/w.txt"
"""


def _subscriber(home: Path, tracking_uri: str, store_uri: str) -> tuple[LineageSubscriber, Plan]:
    (home / "pipeline.yaml").write_text(PIPELINE)
    pipeline = load_pipeline(home / "pipeline.yaml")
    placement = Placement(infra="kubernetes/ctx", cloud="kubernetes", region="ctx", zone=None, instance_type="",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0, store_uri=store_uri)
    plan = Plan(pipeline=pipeline.name, objective="cost", stages={"train": placement}, egress=(), total_usd=0.0,
                total_hours=0.0)
    recorder = MlflowRecorder(tracking_uri, [SECRET], skyflow_home=home)
    writer = LineageWriter(recorder=recorder, background_ok=False)
    return LineageSubscriber(writer, pipeline), plan


def _run_node(tmp_path: Path, s3: StoreServer, plan: Plan, mlflow_env: dict[str, str],
              node_tracking_uri: str | None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The stage wrapper as a remote node runs it: only what the backend sends, the store's credentials, PATH."""
    placement = plan.stages["train"]
    assert placement.store_uri is not None
    env = {**mlflow_env, "TOKEN": SECRET}
    if node_tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = node_tracking_uri  # what this node is given, when it differs
    launch = launch_for(tmp_path, STAGE, placement=placement, env=env, secrets=(SECRET,),
                        outputs={"model": tmp_path / "model"}, run_id="r1", attempt=1)
    plain, secret = split_env(launch)
    spec = node_spec(launch, placement.store_uri)
    node_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
                "SKYFLOW_NODE_ROOT": str(tmp_path / "node"), SPEC_ENV: json.dumps(spec), **plain, **secret,
                **_aws(s3)}
    proc = subprocess.run([sys.executable, "-m", "skyflow.backends.remote_stage"], env=node_env,
                          capture_output=True, text=True, timeout=300)
    return proc, spec


def _aws(s3: StoreServer) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _finish(subscriber: LineageSubscriber, started_at: float) -> None:
    row = StageRow(stage="train", state=StageState.SUCCEEDED, attempts=1, infra="kubernetes/ctx", accelerator=None,
                   hourly_usd=0.0, num_nodes=1, estimated_usd=0.0, cost_usd=0.0, egress_gb=0.0, egress_usd=0.0,
                   cache_key=None, started_at=started_at, ended_at=time.time(), duration_s=1.0, message=None,
                   log_path=None)
    subscriber(RunEvent(StageState.SUCCEEDED, "train", run_id="r1", row=row))
    subscriber(RunEvent("run-succeeded", None, run_id="r1"))
    subscriber.writer.close()


@pytest.mark.parametrize("node_sees", ["the runner's sqlite file", "a server that does not answer"])
def test_a_node_that_cannot_reach_the_store_carries_its_mlflow_calls_back(
        node_sees: str, s3_server: StoreServer, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _aws(s3_server).items():
        monkeypatch.setenv(key, value)  # the runner reads the carried-back store from the same S3
    store_uri = s3_server.new_uri()
    open_store(store_uri, create=True)
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    subscriber, plan = _subscriber(home, tracking_uri, store_uri)
    started_at = time.time()
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=plan))
    mlflow_env = subscriber.open_stage_run("r1", "train", "kubernetes/ctx")
    stage_run = subscriber.stage_runs["train"].run_id
    assert mlflow_env["MLFLOW_RUN_ID"] == stage_run and mlflow_env["MLFLOW_TRACKING_URI"] == tracking_uri

    unreachable = None if node_sees.startswith("the runner") else f"http://127.0.0.1:{free_port()}"
    proc, spec = _run_node(tmp_path, s3_server, plan, mlflow_env, unreachable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = read_result(store_uri, spec["result_key"])
    assert outputs is not None and set(outputs) == {"model"}
    assert open_store(store_uri).read_optional(capture_key("r1", "train", 1)) is not None
    _finish(subscriber, started_at)

    client = MlflowClient(tracking_uri)
    history = sorted(client.get_metric_history(stage_run, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert all(started_at * 1000 - 1000 <= m.timestamp <= time.time() * 1000 for m in history)
    run = client.get_run(stage_run)
    assert run.data.params["lr"] == "0.01"
    assert run.data.tags["token"] == "***"  # the secret the stage logged is scrubbed on its way back
    assert run.data.tags["skyflow.state"] == "succeeded" and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(stage_run, "plots")] == ["plots/curve.txt"]
    [nested] = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{stage_run}'")
    assert nested.info.run_name == "eval" and nested.data.metrics == {"win_rate": 0.75}


def test_a_node_that_reaches_a_tracking_server_logs_to_it_directly(
        s3_server: StoreServer, mlflow_server: MlflowServer, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _aws(s3_server).items():
        monkeypatch.setenv(key, value)
    store_uri = s3_server.new_uri()
    open_store(store_uri, create=True)
    subscriber, plan = _subscriber(home, mlflow_server.uri, store_uri)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=plan))
    mlflow_env = subscriber.open_stage_run("r1", "train", "kubernetes/ctx")
    stage_run = subscriber.stage_runs["train"].run_id
    proc, _ = _run_node(tmp_path, s3_server, plan, mlflow_env, None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert open_store(store_uri).read_optional(capture_key("r1", "train", 1)) is None  # nothing to carry back
    client = MlflowClient(mlflow_server.uri)
    assert [m.step for m in client.get_metric_history(stage_run, "loss")] == [0, 1, 2, 3, 4]  # before the record
    _finish(subscriber, time.time())
    assert client.get_run(stage_run).data.tags["skyflow.state"] == "succeeded"


def test_a_node_tells_a_store_that_answers_from_one_that_does_not(tmp_path: Path) -> None:
    """Any HTTP answer means reachable (an auth proxy says 401, a bare server 404); a closed port or a
    file on the runner's machine does not."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert store_answers(f"http://127.0.0.1:{server.server_address[1]}")  # answers 501 to GET
    finally:
        server.shutdown()
        server.server_close()
    assert not store_answers(f"http://127.0.0.1:{free_port()}")
    assert not store_answers(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not store_answers(f"postgresql://u@127.0.0.1:{free_port()}/db")
