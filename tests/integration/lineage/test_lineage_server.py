"""Lineage against a real `mlflow server`: layout over REST, no record lost while it is down, and a
`skyflow run` whose stage logs into its own run and registers its model there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.trace import trace_artifact
from tests.integration.lineage.conftest import MlflowServer, free_port
from tests.integration.lineage.lineage_pipeline import POLICY, SECRET, chain_records, run_info
from tests.integration.runner.conftest import Skyflow

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("mlflow")]


def stage_runs(client: MlflowClient, run_id: str) -> dict[str, str]:
    experiment = client.get_experiment_by_name("rlhf")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`skyflow.kind` = 'stage_run' AND tags.`skyflow.run_id` = '{run_id}'"
    )
    return {r.info.run_name: r.info.status for r in runs}


def test_layout_and_trace_over_the_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    log = tmp_path / "sft.log"
    log.write_text(f"token {SECRET}\n")
    recorder = MlflowRecorder(mlflow_server.uri, [SECRET], skyflow_home=tmp_path / "home")
    recorder.start_run(run_info("srv-1"))
    for rec in chain_records("srv-1", log):
        recorder.record_stage(rec)
    recorder.end_run("srv-1", "failed", {"actual_usd": 4.5})
    assert recorder.flush(60), recorder.last_error
    recorder.close()

    client = MlflowClient(mlflow_server.uri)
    assert stage_runs(client, "srv-1") == {"sft": "FINISHED", "rm": "FINISHED", "ppo": "FINISHED"}
    parent = client.search_runs(
        [client.get_experiment_by_name("rlhf").experiment_id],  # type: ignore[union-attr]
        "tags.`skyflow.kind` = 'pipeline_run'",
    )[0]
    assert parent.info.status == "FAILED" and parent.data.params["wandb_key"] == "***"
    node = trace_artifact(mlflow_server.uri, POLICY.digest)
    assert [c.producer.stage for c in node.inputs if c.producer] == ["sft", "rm"]
    leaks = [p for p in mlflow_server.root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_records_wait_while_the_server_is_down_and_none_is_lost(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = MlflowRecorder(mlflow_server.uri, [SECRET], skyflow_home=home)
    first.start_run(run_info("down-1"))
    assert first.flush(60), first.last_error

    mlflow_server.stop()
    sft, rm, ppo = chain_records("down-1")
    first.record_stage(sft)
    assert not first.flush(10)
    assert first.pending == 1 and first.spool_path.stat().st_size > 0

    # Back up: the same recorder sends what it held.
    mlflow_server.start()
    assert first.flush(60), first.last_error
    assert first.pending == 0

    # Down again, and the runner ends: what is left stays in the spool file...
    mlflow_server.stop()
    first.record_stage(rm)
    first.record_stage(ppo)
    first.end_run("down-1", "succeeded", {"actual_usd": 4.5})
    first.close(timeout_s=10)
    assert first.pending == 3 and first.spool_path.exists()

    # ...and the next recorder on the same tracking URI sends it once the server is back.
    mlflow_server.start()
    second = MlflowRecorder(mlflow_server.uri, [], skyflow_home=home)
    assert second.pending == 3
    assert second.flush(60), second.last_error
    second.close()
    assert not first.spool_path.exists()

    client = MlflowClient(mlflow_server.uri)
    assert stage_runs(client, "down-1") == {"sft": "FINISHED", "rm": "FINISHED", "ppo": "FINISHED"}
    parent = client.search_runs(
        [client.get_experiment_by_name("rlhf").experiment_id],  # type: ignore[union-attr]
        "tags.`skyflow.run_id` = 'down-1' AND tags.`skyflow.kind` = 'pipeline_run'",
    )
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"


def test_ui_command_serves_the_lineage_store_on_the_pipelines_runs(tmp_path: Path) -> None:
    from skyflow.lineage.recorder import open_recorder

    recorder = open_recorder("sqlite:///" + str(tmp_path / "home" / "mlflow.db"), tmp_path / "home", [])
    recorder.start_run(run_info("ui-1"))
    recorder.end_run("ui-1", "succeeded", {})
    assert recorder.flush(60), recorder.last_error  # type: ignore[attr-defined]
    recorder.close()
    experiment = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}").get_experiment_by_name("rlhf")
    assert experiment is not None

    port = free_port()
    env = {**os.environ, "SKYFLOW_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "skyflow", "ui", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    healthy = response.status == 200
            except OSError:
                time.sleep(0.2)
        assert healthy, f"skyflow ui exited with {proc.poll()}"
        assert (tmp_path / "home" / "mlflow.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    # the pipeline that ran last, in the model-training view (what MLflow 3's UI needs to leave GenAI)
    url = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    assert url in out.decode() and "pipeline rlhf" in out.decode()


SERVED = """\
name: served
stages:
  prep:
    run: echo rows > $SKYFLOW_OUTPUT_ROWS/rows.txt
    outputs: [rows]
  train:
    run: |
      python - <<'PY'
      import os
      import mlflow
      for step in range(3):
          mlflow.log_metric("reward", step * 2.0, step=step)
      open(os.environ["SKYFLOW_OUTPUT_POLICY"] + "/policy.bin", "w").write("policy")
      PY
    inputs: {rows: prep.rows}
    outputs: {policy: {kind: model, register: served-policy}}
"""


def test_a_run_logs_stage_metrics_and_registers_its_model_on_the_server(mlflow_server: MlflowServer,
                                                                        tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    first = Skyflow(tmp_path / "home-a", work)
    first.write("served.yaml", SERVED)
    server = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    code, status, err = first.run_json("served.yaml", "--run-id", "gha-42", env=server)
    assert code == 0, err

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("served")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    train = next(r for r in runs if r.info.run_name == "train")
    prep = next(r for r in runs if r.info.run_name == "prep")
    parent = next(r for r in runs if r.info.run_name == "gha-42")
    assert [(m.step, m.value) for m in client.get_metric_history(train.info.run_id, "reward")] == [
        (0, 0.0), (1, 2.0), (2, 4.0)]
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert prep.info.end_time <= train.info.start_time <= train.info.end_time <= parent.info.end_time
    [version] = client.search_model_versions("name = 'served-policy'")
    assert version.run_id == train.info.run_id
    assert version.tags["skyflow.digest"] == status["stages"]["train"]["outputs"]["policy"]["digest"]
    assert "policy/policy.bin" in {a.path for a in client.list_artifacts(train.info.run_id, "policy")}

    # GitHub Actions gives every job a fresh SKYFLOW_HOME but the same --run-id on a re-run.
    from mlflow.entities import ViewType

    before = {r.info.run_id: (r.info.status, r.info.end_time) for r in runs}
    again = Skyflow(tmp_path / "home-b", work)
    code, _, err = again.run_json("served.yaml", "--run-id", "gha-42", env=server)
    assert code == 0, err
    after = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert {r.info.run_id: (r.info.status, r.info.end_time) for r in after if r.info.run_id in before} == before
    assert all(r.info.lifecycle_stage == "active" for r in after)
    assert sorted(r.info.run_name for r in after) == ["gha-42", "gha-42", "prep", "prep", "train", "train"]
