"""The runner's stage-start hook on the FakeBackend: each stage's MLflow run is opened as it starts and
its variables reach the launch (not a node that cannot reach the store); records carry the run and
real times. The recorder here is a plain LineageRecorder that keeps what it is told."""

from __future__ import annotations

import os
from pathlib import Path

from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.lineage.records import RunInfo, StageRecord, StageRun
from skyflow.planner import Placement, Plan
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import EventBus
from skyflow.runner.lineage_io import LineageSubscriber, LineageWriter
from skyflow.runner.loop import RunLoop
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline

PIPELINE = """
name: hooked
stages:
  prep:
    run: prep
    outputs: [rows]
  train:
    run: train
    inputs: {rows: prep.rows}
    outputs:
      model: {kind: model, register: hooked-model, metrics: metrics.json}
"""


class KeepingRecorder:
    """A LineageRecorder that opens runs with made-up ids (None: the store is away) and keeps records."""

    def __init__(self, tracking_uri: str, *, away: bool = False) -> None:
        self.tracking_uri = tracking_uri
        self.away = away
        self.runs: list[RunInfo] = []
        self.opened: list[str] = []
        self.records: list[StageRecord] = []
        self.last_error = "connection refused" if away else None

    def start_run(self, info: RunInfo) -> None:
        self.runs.append(info)

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        self.opened.append(stage)
        return None if self.away else StageRun(self.tracking_uri, "7", f"mlflow-{stage}")

    def record_stage(self, rec: StageRecord) -> None:
        self.records.append(rec)

    def end_run(self, run_id: str, state: str, totals: dict[str, object]) -> None:
        return None

    def close(self) -> None:
        return None


def _placement(infra: str, store_uri: str | None = None) -> Placement:
    return Placement(infra=infra, cloud=infra.split("/")[0], region=None, zone=None, instance_type="x",
                     accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0, store_uri=store_uri)


def _writes_outputs(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        (path / f"{name}.txt").write_text(launch.stage)
    return FakeResult()


def run(tmp_path: Path, recorder: KeepingRecorder, train_infra: str = "local",
        resume_of: str | None = None, train_store: str | None = None) -> tuple[FakeBackend, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    home, backend = tmp_path / "home", FakeBackend(_writes_outputs)
    warnings: list[str] = []
    plan = Plan(pipeline="hooked", objective="cost", stages={"prep": _placement("local"),
                                                             "train": _placement(train_infra, train_store)},
                egress=(), total_usd=0.0, total_hours=0.0)
    state = RunStore(home / "state.db")
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=warnings.append), pipeline, state=state,
                                   home=home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    ctx = RunContext(pipeline=pipeline, plan=plan, state=state,
                     backends=BackendPool(BackendContext(), {"local": backend, "skypilot": backend, "ssh": backend}),
                     options=RunOptions(env=env), emit=EventBus([subscriber]), home=home, secrets={},
                     stage_runs=subscriber)
    loop = RunLoop(ctx)
    outcome = loop.resume(resume_of, {}) if resume_of else loop.start("r1", "pipeline.yaml", {}, {}, lineage=True)
    assert outcome == "succeeded"
    return backend, warnings


def test_each_stage_gets_its_own_run_and_the_record_names_it(tmp_path: Path) -> None:
    recorder = KeepingRecorder("sqlite:////home/me/.skyflow/mlflow.db")
    backend, warnings = run(tmp_path, recorder)
    for launch in backend.launches:
        assert launch.env["MLFLOW_RUN_ID"] == f"mlflow-{launch.stage}"
        assert launch.env["MLFLOW_EXPERIMENT_ID"] == "7"
        assert launch.env["MLFLOW_TRACKING_URI"] == "sqlite:////home/me/.skyflow/mlflow.db"
    assert warnings == []
    prep, train = recorder.records
    assert (prep.mlflow_run_id, train.mlflow_run_id) == ("mlflow-prep", "mlflow-train")
    assert prep.started_at is not None and train.started_at is not None and train.ended_at is not None
    assert prep.ended_at is not None and prep.started_at <= prep.ended_at <= train.started_at <= train.ended_at
    [declared] = train.declared
    assert (declared.name, declared.kind, declared.register, declared.metrics) == (
        "model", "model", "hooked-model", "metrics.json")
    assert prep.declared == []  # a plain data output asks nothing of MLflow

    [info] = recorder.runs
    assert info.code_digest is not None and info.code_digest.startswith("sha256:")
    assert info.source_name == str(tmp_path / "pipeline.yaml") and info.source_type in ("PROJECT", "LOCAL")
    assert info.run_key and all(r.run_key == info.run_key for r in recorder.records)


def test_a_resume_names_the_same_run_and_a_new_run_another(tmp_path: Path) -> None:
    first = KeepingRecorder("http://mlflow.example:5000")
    run(tmp_path, first)
    again = KeepingRecorder("http://mlflow.example:5000")
    run(tmp_path, again, resume_of="r1")
    assert again.runs[0].run_key == first.runs[0].run_key
    other = KeepingRecorder("http://mlflow.example:5000")
    run(tmp_path / "elsewhere", other)  # the same run id "r1" from another SKYFLOW_HOME
    assert other.runs[0].run_key != first.runs[0].run_key


def test_an_ssh_node_that_cannot_reach_a_sqlite_store_gets_no_mlflow_variables(tmp_path: Path) -> None:
    recorder = KeepingRecorder("sqlite:////home/me/.skyflow/mlflow.db")
    backend, warnings = run(tmp_path, recorder, train_infra="ssh/lab")
    train = next(launch for launch in backend.launches if launch.stage == "train")
    assert not [k for k in train.env if k.startswith("MLFLOW_")]
    assert len(warnings) == 1 and "cannot reach" in warnings[0] and "tracking server" in warnings[0]
    assert recorder.records[1].mlflow_run_id == "mlflow-train"  # the run is still opened, with its real start
    assert recorder.records[1].node_mlflow == []


def test_a_wrapper_node_gets_its_run_and_the_record_says_where_its_calls_come_back(tmp_path: Path) -> None:
    """A node running the stage wrapper decides for itself whether it reaches the store; the record
    names where each attempt of this run leaves what it could not send."""
    recorder = KeepingRecorder("sqlite:////home/me/.skyflow/mlflow.db")
    store = str(tmp_path / "bucket")  # the stage's store (an object store in a real run)
    backend, warnings = run(tmp_path, recorder, train_infra="aws/us-east-1", train_store=store)
    train = next(launch for launch in backend.launches if launch.stage == "train")
    assert train.env["MLFLOW_RUN_ID"] == "mlflow-train" and warnings == []
    assert train.env["MLFLOW_TRACKING_URI"] == "sqlite:////home/me/.skyflow/mlflow.db"
    prep, train_record = recorder.records
    assert prep.node_mlflow == []  # ran on this machine: its calls went to the store directly
    assert train_record.node_mlflow == [(store, "runs/r1/train/attempt-1/mlflow.json")]


def test_a_node_reaches_a_tracking_server(tmp_path: Path) -> None:
    recorder = KeepingRecorder("https://mlflow.example")
    backend, warnings = run(tmp_path, recorder, train_infra="aws/us-east-1")
    train = next(launch for launch in backend.launches if launch.stage == "train")
    assert train.env["MLFLOW_TRACKING_URI"] == "https://mlflow.example" and warnings == []


def test_a_store_that_is_away_warns_once_and_stages_run_without_a_run(tmp_path: Path) -> None:
    recorder = KeepingRecorder("http://127.0.0.1:9", away=True)
    backend, warnings = run(tmp_path, recorder)
    assert len(backend.launches) == 2 and recorder.opened == ["prep", "train"]
    assert all("MLFLOW_RUN_ID" not in launch.env for launch in backend.launches)
    assert len(warnings) == 1 and "connection refused" in warnings[0]
    assert [r.mlflow_run_id for r in recorder.records] == [None, None]
