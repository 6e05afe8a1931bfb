"""`skyflow run` with lineage on a sqlite store: each stage's MLflow run is opened as the stage starts,
the stage's own MLflow calls land in it, declared models become registered versions, times follow
the DAG, and neither a resume nor a run id used again deletes anything."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from skyflow.lineage.drain import wait_for_drain
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

# prep -> train -> report; train logs with MLflow itself and declares a registered model, its metrics
# file and a plot. Each stage notes the MLflow variables it was given (before MLflow reads them).
PIPELINE = """\
name: tiny
stages:
  prep:
    run: env | grep ^MLFLOW_ > $SKYFLOW_OUTPUT_ROWS/env.txt; echo 1 2 3 >> $SKYFLOW_OUTPUT_ROWS/rows.txt
    outputs: [rows]
  train:
    run: |
      env | grep ^MLFLOW_ > $SKYFLOW_OUTPUT_MODEL/env.txt
      python - <<'PY'
      import json, os
      import mlflow
      for step in range(4):
          mlflow.log_metrics({"loss": 1.0 / (step + 1), "accuracy": step / 4}, step=step)
      mlflow.log_param("lr", "0.01")
      out = os.environ["SKYFLOW_OUTPUT_MODEL"]
      os.makedirs(f"{out}/weights")
      open(f"{out}/weights/w.txt", "w").write("0.5 0.25")
      json.dump({"final_loss": 0.25, "history": [{"step": 0, "val": 0.9}, {"step": 1, "val": 0.7}]},
                open(f"{out}/summary.json", "w"))
      open(f"{out}/curve.png", "wb").write(b"not really a png")
      PY
    inputs: {rows: prep.rows}
    outputs:
      model: {kind: model, register: tiny-model, metrics: summary.json, artifacts: [curve.png]}
  report:
    run: cat $SKYFLOW_INPUT_MODEL/weights/w.txt > $SKYFLOW_OUTPUT_OUT/report.txt; test -f GO_FILE
    inputs: {model: train.model}
    outputs: [out]
"""


@pytest.fixture
def skyflow(tmp_path: Path) -> Skyflow:
    work = tmp_path / "work"
    work.mkdir()
    return Skyflow(tmp_path / "home", work)


def store_uri(home: Path) -> str:
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def runs_of(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def stage_env(home: Path, status: dict[str, object], stage: str, output: str) -> dict[str, str]:
    """The MLFLOW_* variables a stage saw, from the env.txt it wrote into its output."""
    from skyflow.artifacts import ArtifactRecord, ArtifactRef, fetch_artifact

    ref = status["stages"][stage]["outputs"][output]  # type: ignore[index]
    record = ArtifactRecord(output, ref["uri"], ref["digest"], store_uri=ref["uri"].split("/manifests/")[0])
    folder = fetch_artifact(ArtifactRef.open(record), home / "fetched" / stage)
    lines = (folder / "env.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def download_model(model_uri: str, store: str, dest: Path) -> str:
    """What a user does with a registered version: download it by its models:/ URI (in a process of
    its own, so that MLflow's process-wide tracking URI stays untouched here)."""
    import subprocess
    import sys

    code = "import sys, mlflow; print(mlflow.artifacts.download_artifacts(sys.argv[1], dst_path=sys.argv[2]))"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store}
    done = subprocess.run([sys.executable, "-c", code, model_uri, str(dest)], capture_output=True, text=True,
                          env=env, check=True, cwd=dest.parent)
    return done.stdout.strip().splitlines()[-1]


def test_stage_code_logs_into_its_own_run_and_a_declared_model_is_registered(skyflow: Skyflow,
                                                                             tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    skyflow.write("tiny.yaml", PIPELINE.replace("GO_FILE", str(tmp_path / "go")))
    code, status, err = skyflow.run_json("tiny.yaml", "--run-id", "tiny-1")
    assert code == 0, err
    assert wait_for_drain(store_uri(skyflow.home), skyflow.home)  # a first run need not wait for MLflow either
    client = MlflowClient(store_uri(skyflow.home))
    runs = runs_of(client, "tiny")
    parent = next(r for r in runs if r.data.tags["skyflow.kind"] == "pipeline_run")
    stages = {r.info.run_name: r for r in runs if r.data.tags["skyflow.kind"] == "stage_run"}
    assert set(stages) == {"prep", "train", "report"}
    train = stages["train"]

    # the stage was pointed at its own run, nested under the pipeline run
    assert stage_env(skyflow.home, status, "train", "model") == {
        "MLFLOW_TRACKING_URI": store_uri(skyflow.home), "MLFLOW_EXPERIMENT_ID": train.info.experiment_id,
        "MLFLOW_RUN_ID": train.info.run_id}
    assert stage_env(skyflow.home, status, "prep", "rows")["MLFLOW_RUN_ID"] == stages["prep"].info.run_id
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # ...and what its code logged is there, beside what skyflow records
    history = client.get_metric_history(train.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    assert train.data.params["lr"] == "0.01" and train.data.params["placement.infra"] == "local"
    assert train.data.metrics["attempts"] == 1 and train.info.status == "FINISHED"
    # the declared metrics file and plot
    assert train.data.metrics["final_loss"] == 0.25
    assert [(m.step, m.value) for m in client.get_metric_history(train.info.run_id, "history.val")] == [
        (0, 0.9), (1, 0.7)]
    assert "curve.png" in {a.path for a in client.list_artifacts(train.info.run_id)}

    # the model: a directory of the stage run, and a registered version whose source is that run
    digest = status["stages"]["train"]["outputs"]["model"]["digest"]
    assert train.data.tags["skyflow.output.model.digest"] == digest
    [version] = client.search_model_versions("name = 'tiny-model'")
    assert version.run_id == train.info.run_id and version.source == f"runs:/{train.info.run_id}/model"
    assert version.tags["skyflow.run_id"] == "tiny-1" and version.tags["skyflow.digest"] == digest
    assert train.data.tags["skyflow.model_version.model"] == "tiny-model/1"
    downloaded = Path(download_model("models:/tiny-model/1", store_uri(skyflow.home), tmp_path / "dl"))
    assert (downloaded / "weights" / "w.txt").read_text() == "0.5 0.25"

    # real times, along the DAG: each stage starts after its upstream ended
    assert stages["prep"].info.end_time <= stages["train"].info.start_time
    assert stages["train"].info.end_time <= stages["report"].info.start_time
    assert parent.info.start_time <= stages["prep"].info.start_time
    assert stages["report"].info.end_time <= parent.info.end_time
    assert parent.data.tags["mlflow.source.name"] == str(skyflow.workdir / "tiny.yaml")
    assert parent.data.tags["mlflow.source.type"] in ("PROJECT", "LOCAL")
    assert parent.data.tags["skyflow.code_digest"].startswith("sha256:")
    with sqlite3.connect(skyflow.home / "state.db") as db:
        (cache_key,) = db.execute("SELECT cache_key FROM stages WHERE run_id='tiny-1' AND stage='train'").fetchone()
    assert train.data.tags["skyflow.cache_key"] == cache_key != train.data.tags["skyflow.code_digest"]

    # the same model again (a cache hit) links the version it has instead of making another
    code, _, err = skyflow.run_json("tiny.yaml", "--run-id", "tiny-2")
    assert code == 0, err
    assert wait_for_drain(store_uri(skyflow.home), skyflow.home)  # a run of cache hits leaves lineage to the drain
    assert len(client.search_model_versions("name = 'tiny-model'")) == 1
    cached = next(r for r in runs_of(client, "tiny")
                  if r.data.tags.get("skyflow.run_id") == "tiny-2" and r.info.run_name == "train")
    assert cached.data.tags["skyflow.cache_hit"] == "true"
    assert cached.data.tags["skyflow.model_version.model"] == "tiny-model/1"


def test_a_resume_and_a_reused_run_id_delete_nothing(skyflow: Skyflow, tmp_path: Path) -> None:
    skyflow.write("tiny.yaml", PIPELINE.replace("GO_FILE", str(tmp_path / "go")))
    code, _, _ = skyflow.run_json("tiny.yaml", "--run-id", "ci-7")
    assert code == 1  # report fails until the go file exists
    (tmp_path / "go").touch()
    resumed = skyflow("resume", "ci-7")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert wait_for_drain(store_uri(skyflow.home), skyflow.home)  # a short resume leaves lineage to the drain

    client = MlflowClient(store_uri(skyflow.home))
    runs = runs_of(client, "tiny")
    assert all(r.info.lifecycle_stage == "active" for r in runs)
    assert sorted(r.info.run_name for r in runs) == ["ci-7", "prep", "report", "report", "train"]
    reports = sorted((r for r in runs if r.info.run_name == "report"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in reports] == ["FAILED", "FINISHED"]
    assert reports[0].data.tags["skyflow.superseded_by"] == reports[1].info.run_id
    parent = next(r for r in runs if r.info.run_name == "ci-7")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r is not parent} == {parent.info.run_id}
    before = {r.info.run_id: (r.info.status, r.info.end_time) for r in runs}

    # A CI job on another machine (another SKYFLOW_HOME) with the same --run-id, same MLflow store.
    other = Skyflow(tmp_path / "other-home", skyflow.workdir)
    code, _, err = other.run_json("tiny.yaml", "--run-id", "ci-7", env={"MLFLOW_TRACKING_URI": store_uri(skyflow.home)})
    assert code == 0, err
    assert wait_for_drain(store_uri(skyflow.home), other.home)
    runs = runs_of(client, "tiny")
    assert {r.info.run_id: (r.info.status, r.info.end_time) for r in runs if r.info.run_id in before} == before
    parents = [r for r in runs if r.data.tags["skyflow.kind"] == "pipeline_run"]
    assert [p.info.run_name for p in parents] == ["ci-7", "ci-7"]
    assert len({p.data.tags["skyflow.run_key"] for p in parents}) == 2


def test_a_store_that_is_away_leaves_stages_without_mlflow_variables_and_warns_once(skyflow: Skyflow) -> None:
    skyflow.write("away.yaml", """\
name: away
stages:
  a: {run: 'env | grep ^MLFLOW_ > $SKYFLOW_OUTPUT_O/env.txt || true', outputs: [o]}
  b: {run: 'env | grep ^MLFLOW_ > $SKYFLOW_OUTPUT_O/env.txt || true', inputs: {i: a.o}, outputs: [o]}
""")
    away = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens there
    code, status, err = skyflow.run_json("away.yaml", "--run-id", "away-1", env=away)
    assert code == 0, err
    assert err.count("no MLflow run could be opened") == 1, err
    for stage in ("a", "b"):
        assert "MLFLOW_RUN_ID" not in stage_env(skyflow.home, status, stage, "o")
    spooled = [p for p in (skyflow.home / "lineage-spool").rglob("*.jsonl") if p.stat().st_size > 0]
    assert spooled, "the records wait in the spool for the store's return"
    events = [json.loads(line)["event"] for p in spooled for line in p.read_text().splitlines()]
    b = next(e["record"] for e in events if e["kind"] == "stage" and e["record"]["stage"] == "b")
    a = next(e["record"] for e in events if e["kind"] == "stage" and e["record"]["stage"] == "a")
    assert b["mlflow_run_id"] is None and a["ended_at"] <= b["started_at"] <= b["ended_at"]


def test_two_processes_opening_a_new_store_at_once_leave_a_usable_schema(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    db = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{db}"
    # Each process imports MLflow, says it is ready, and opens the store when told to: both at once.
    code = ("import pathlib, sys, time\n"
            "from skyflow.lineage.mlflow_client import open_client\n"
            "import mlflow\n"
            "pathlib.Path(sys.argv[2]).touch()\n"
            "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.005)\n"
            "open_client(sys.argv[1]).search_experiments()\n")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(tmp_path / f"ready-{i}"), str(go)],
                              stderr=subprocess.PIPE, text=True, env={**os.environ}) for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors

    with sqlite3.connect(db) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert not [t for t in tables if t.startswith("_alembic_tmp")], tables
    assert len(versions) == 1 and {"runs", "metrics", "registered_models"} <= tables
    client = MlflowClient(uri)
    experiment = client.create_experiment("after")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "x", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"x": 1.0}
