"""The local MLflow store a node gives a stage that cannot reach the tracking store: MLflow itself logs
into the run it holds (same ids as the real run), and the runner's side reads back every value."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from skyflow.backends.node_mlflow import prepare_tracking
from skyflow.lineage.node_replay import read_file_store

RUN_ID = "0123456789abcdef0123456789abcdef"
RUN_ENV = {"MLFLOW_TRACKING_URI": "sqlite:////home/me/.skyflow/mlflow.db", "MLFLOW_EXPERIMENT_ID": "4",
           "MLFLOW_RUN_ID": RUN_ID, "SKYFLOW_STAGE": "sft"}


def test_a_runner_sqlite_store_is_replaced_by_a_local_store_holding_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracking = prepare_tracking(RUN_ENV, tmp_path)
    assert tracking.local_store == tmp_path / "mlflow"
    assert tracking.env["MLFLOW_TRACKING_URI"] == (tmp_path / "mlflow" / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", tracking.env["MLFLOW_ALLOW_FILE_STORE"])
    client = MlflowClient(tracking.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(RUN_ID)  # the stage's run id means the same run on the node
    assert (run.info.experiment_id, run.info.run_name, run.info.status) == ("4", "sft", "RUNNING")
    for step in range(3):
        client.log_metric(RUN_ID, "train/loss", 2.0 - step, timestamp=1_000 + step, step=step)
    client.log_param(RUN_ID, "lr", "3e-4")
    client.set_tag(RUN_ID, "phase", "sft")
    child = client.create_run("4", run_name="eval", tags={"mlflow.parentRunId": RUN_ID})
    client.log_metric(child.info.run_id, "win_rate", 0.5, timestamp=2_000, step=7)

    own, nested = read_file_store(tmp_path / "mlflow" / "mlruns")
    assert own["run_id"] == RUN_ID and own["parent"] is None
    assert own["metrics"] == [("train/loss", 2.0, 1_000, 0), ("train/loss", 1.0, 1_001, 1),
                              ("train/loss", 0.0, 1_002, 2)]
    assert own["params"] == {"lr": "3e-4"} and own["tags"]["phase"] == "sft"
    assert nested["parent"] == RUN_ID and nested["run_name"] == "eval"
    assert nested["metrics"] == [("win_rate", 0.5, 2_000, 7)]


def test_without_a_stage_run_nothing_changes(tmp_path: Path) -> None:
    tracking = prepare_tracking({k: v for k, v in RUN_ENV.items() if k != "MLFLOW_RUN_ID"}, tmp_path)
    assert tracking.env == {} and tracking.local_store is None
    assert not (tmp_path / "mlflow").exists()
