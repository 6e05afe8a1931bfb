"""The runner's lineage side when things go wrong: a recorder that fails warns once and the run goes on,
a stage whose MLflow run cannot be opened runs without one, stages not finished are not recorded, and
the git and user facts degrade to "unknown" where they cannot be read."""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path
from typing import Any

import pytest

from skyflow.errors import LineageError
from skyflow.lineage.records import RunInfo, StageRecord, StageRun
from skyflow.runner import lineage_io
from skyflow.runner.events import RUN_STARTED, RunEvent, run_ended
from skyflow.runner.lineage_io import LineageSubscriber, LineageWriter, git_state
from skyflow.runner.state import StageRow
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import load_pipeline


class RecordingRecorder:
    """A recorder that keeps what it is given, or fails every call with ``failure``."""

    tracking_uri = "sqlite:////tmp/lineage/mlflow.db"

    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure
        self.last_error: str | None = None
        self.calls: list[tuple[str, Any]] = []

    def _do(self, name: str, value: Any) -> None:
        if self.failure:
            self.last_error = self.failure
            raise LineageError(self.failure)
        self.calls.append((name, value))

    def start_run(self, info: RunInfo) -> None:
        self._do("start", info)

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        self._do("open", stage)
        return StageRun(self.tracking_uri, "1", f"mlflow-{stage}")

    def record_stage(self, rec: StageRecord) -> None:
        self._do("stage", rec)

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        self._do("end", state)

    def close(self) -> None:
        self._do("close", None)


@pytest.fixture
def pipeline(tmp_path: Path) -> ResolvedPipeline:
    (tmp_path / "p.yaml").write_text("name: two\nstages:\n  prep: {run: prep, outputs: [rows]}\n")
    return load_pipeline(tmp_path / "p.yaml")


def row(state: str) -> StageRow:
    return StageRow(stage="prep", state=state, attempts=1, infra="local", accelerator=None, hourly_usd=0.0,
                    num_nodes=1, estimated_usd=0.0, cost_usd=0.0, egress_gb=0.0, egress_usd=0.0, cache_key=None,
                    started_at=1.0, ended_at=3.0, duration_s=2.0, message=None, log_path=None)


def test_a_failing_recorder_warns_once_and_the_run_goes_on(pipeline: ResolvedPipeline) -> None:
    warnings: list[str] = []
    writer = LineageWriter(recorder=RecordingRecorder("the lineage store is read-only"),
                           warn=warnings.append, background_ok=False)
    writer.start("r1", pipeline, {}, None)
    writer.stage("r1", pipeline, row("succeeded"))
    writer.end("r1", "succeeded", {})
    writer.close()
    assert warnings == ["lineage not recorded: the lineage store is read-only"]


def test_a_stage_run_that_cannot_be_opened_is_said_once_with_the_cause() -> None:
    warnings: list[str] = []
    writer = LineageWriter(recorder=RecordingRecorder("database is locked"),
                           warn=warnings.append)
    assert writer.open_stage("r1", "prep") is None
    assert writer.open_stage("r1", "train") is None
    assert warnings == ["lineage: no MLflow run could be opened for stage 'prep' on MLflow sqlite store "
                        "/tmp/lineage/mlflow.db (database is locked); stages run without MLFLOW_RUN_ID and their "
                        "lineage waits in the spool"]


def test_only_finished_stages_are_recorded_and_the_plan_adds_nothing_when_absent(pipeline: ResolvedPipeline) -> None:
    recorder = RecordingRecorder()
    writer = LineageWriter(recorder=recorder, warn=print)
    subscriber = LineageSubscriber(writer, pipeline)
    writer.stage("r1", pipeline, row("pending"))
    subscriber(RunEvent("running", "prep", run_id="r1", row=row("running")))  # sent back to run again
    assert recorder.calls == []
    subscriber(RunEvent("succeeded", "prep", run_id="r1", row=row("succeeded")))
    subscriber(RunEvent(run_ended("succeeded"), None, run_id="r1"))
    (kind, record), end = recorder.calls
    assert kind == "stage" and end == ("end", "succeeded")
    assert record.stage == "prep" and record.state == "succeeded" and record.mlflow_run_id is None
    assert record.placement["infra"] == "local" and "instance_type" not in record.placement  # no plan heard


def test_a_run_started_without_run_state_gets_a_fresh_key(pipeline: ResolvedPipeline) -> None:
    recorder = RecordingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1"))
    (kind, info), = recorder.calls
    assert kind == "start" and len(info.run_key) == 32 and info.run_key != subscriber._run_key("r1")


def test_git_facts_are_unknown_where_git_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory: 'git'")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_state(str(tmp_path)) == (None, False)

    def hangs(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("git", 5)

    monkeypatch.setattr(subprocess, "run", hangs)
    assert git_state(str(tmp_path)) == (None, False)


def test_a_user_without_a_name_is_recorded_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def nameless() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", nameless)
    assert lineage_io._user() is None
