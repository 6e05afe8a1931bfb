"""What the runner's lineage side hands a recorder, field by field: the git facts of a real checkout,
the pipeline's code digest and source name, the whole RunInfo and StageRecord (with every default and
fallback), the run's key across resumes, closing with or without a hand-off to a background process,
and the MLflow variables a starting stage gets by where it runs (this machine, an ssh node, a node
running the stage wrapper), with what a wrapper node carries back named on the stage's record."""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import inspect
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import skyflow
from skyflow.artifacts import ArtifactRecord
from skyflow.artifacts.cache import code_digest
from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.recorder import LineageRecorder, NullRecorder
from skyflow.lineage.records import DeclaredOutput, RunInfo, StageRecord, StageRun
from skyflow.planner import Placement, Plan
from skyflow.runner import lineage_io
from skyflow.runner.events import INPUTS, LOG, RETRYING, RUN_STARTED, RunEvent, run_ended
from skyflow.runner.lineage_io import LineageSubscriber, LineageWriter, git_state, pipeline_code_digest
from skyflow.runner.state import RunStore, StageRow
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import load_pipeline

SQLITE_URI = "sqlite:////srv/lineage/mlflow.db"

PIPELINE = """\
name: contract
stages:
  zeta:
    run: prep
    workdir: code/prep
    resources: {cpus: 2, use_spot: true}
    outputs: [rows]
  alpha:
    run: train
    workdir: code/train
    resources: {cpus: 8}
    inputs: {rows: zeta.rows}
    outputs:
      model: {kind: model, register: contract-model, metrics: metrics.json, artifacts: [plot.png]}
      notes: {}
  beta:
    run: eval
    workdir: code/prep
    inputs: {model: alpha.model}
"""

ROWS = ArtifactRecord(name="rows", uri="file:///store/manifests/rows.json", digest="sha256:rows", size_bytes=2048,
                      store_uri="file:///store", file_count=3)
MODEL = ArtifactRecord(name="model", uri="file:///store/manifests/model.json", digest="sha256:model",
                       size_bytes=4096, store_uri="file:///store", file_count=2)
DECLARED_MODEL = DeclaredOutput("model", "model", "contract-model", "metrics.json", ("plot.png",))
ALPHA_ENV = {"MLFLOW_TRACKING_URI": SQLITE_URI, "MLFLOW_EXPERIMENT_ID": "7", "MLFLOW_RUN_ID": "mlflow-alpha"}
RECORDER_METHODS = ("start_run", "open_stage", "record_stage", "end_run", "close")


class KeepingRecorder:
    """A LineageRecorder that keeps every call in order; its stage runs live on ``tracking_uri``
    (none while ``away``, with ``last_error`` saying why)."""

    def __init__(self, tracking_uri: str = SQLITE_URI, *, away: bool = False) -> None:
        self.tracking_uri = tracking_uri
        self.last_error: str | None = "connection refused" if away else None
        self.away = away
        self.calls: list[tuple[str, Any]] = []

    def start_run(self, info: RunInfo) -> None:
        self.calls.append(("start", info))

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        self.calls.append(("open", (run_id, stage)))
        return None if self.away else StageRun(self.tracking_uri, "7", f"mlflow-{stage}")

    def record_stage(self, rec: StageRecord) -> None:
        self.calls.append(("stage", rec))

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        self.calls.append(("end", (run_id, state, totals)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def records(self) -> list[StageRecord]:
        return [value for kind, value in self.calls if kind == "stage"]

    def infos(self) -> list[RunInfo]:
        return [value for kind, value in self.calls if kind == "start"]


class HandingOffRecorder(KeepingRecorder):
    """A recorder that can leave what it has not sent to a background process (as MlflowRecorder can)."""

    def __init__(self, *, hands_off: bool) -> None:
        super().__init__()
        self.hands_off = hands_off

    def hand_off(self) -> bool:
        self.calls.append(("hand_off", None))
        return self.hands_off


class BareRecorder:
    """A recorder with the protocol's methods only (no `tracking_uri`, no `last_error`) that opens no run."""

    def start_run(self, info: RunInfo) -> None:
        return None

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        return None

    def record_stage(self, rec: StageRecord) -> None:
        return None

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture(autouse=True)
def git_sees_only_this_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git looks for a checkout no higher than this test's folder."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def write_project(root: Path) -> Path:
    for folder, script in (("prep", "prep.py"), ("train", "train.py")):
        (root / "code" / folder).mkdir(parents=True)
        (root / "code" / folder / script).write_text(f"print({folder!r})\n")
    (root / "p.yaml").write_text(PIPELINE)
    return root / "p.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=Lineage", "-c", "user.email=lineage@example.com",
                           "-c", "commit.gpgsign=false", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def committed_checkout(root: Path) -> str:
    """A git checkout of the project at ``root`` with everything committed; its commit."""
    write_project(root)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "pipeline")
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def pipeline(tmp_path: Path) -> ResolvedPipeline:
    return load_pipeline(write_project(tmp_path / "proj"))


def placement(infra: str, *, store_uri: str | None = None, use_spot: bool = False) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=f"{region}a" if region else None,
                     instance_type="p4d.24xlarge" if region else "local", accelerators={"A100": 8.0} if region else {},
                     use_spot=use_spot, num_nodes=2 if region else 1, hourly_usd=32.77 if region else 0.0, hours=1.5,
                     store_uri=store_uri)


def make_plan(alpha: Placement, **others: Placement) -> Plan:
    stages = {"zeta": placement("local"), "alpha": alpha, **others}
    return Plan(pipeline="contract", objective="cost", stages=stages, egress=(), total_usd=98.31, total_hours=3.0)


def stage_row(stage: str = "alpha", state: str = "succeeded", **fields: Any) -> StageRow:
    values: dict[str, Any] = {
        "stage": stage, "state": state, "attempts": 1, "infra": "aws/us-east-1", "accelerator": "A100:8",
        "hourly_usd": 32.77, "num_nodes": 2, "estimated_usd": 12.5, "cost_usd": 11.0, "egress_gb": 3.5,
        "egress_usd": 0.31, "cache_key": "key-alpha", "started_at": 100.0, "ended_at": 160.0, "duration_s": 60.0,
        "message": None, "log_path": "/logs/alpha.log", "outputs": {"model": MODEL}}
    values.update(fields)
    return StageRow(**values)


def no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


def run_state(home: Path, pipeline: ResolvedPipeline, stages: list[str] | None = None) -> RunStore:
    """Run state holding run r1 of ``pipeline`` (its stages, or only ``stages``), made at Unix time 1000."""
    state = RunStore(home / "state.db")
    state.create_run("r1", pipeline.name, "p.yaml", pipeline.digest(), {}, {}, None,
                     list(pipeline.order) if stages is None else stages, None)
    state.set_run("r1", created_at=1000.0)
    return state


def expected_key(home: Path, run_id: str, created_at: float) -> str:
    return hashlib.sha256(f"{home.resolve()}\0{run_id}\0{created_at!r}".encode()).hexdigest()[:32]


def user_name() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def started_between(info: RunInfo, before: float, after: float) -> RunInfo:
    """``info`` with its start time checked to lie in [before, after], then set to 0."""
    assert before <= info.started_at <= after
    return dataclasses.replace(info, started_at=0.0)


# -- the recorders above ------------------------------------------------------------------------

@pytest.mark.parametrize("recorder", [KeepingRecorder, HandingOffRecorder, BareRecorder])
def test_the_recorders_here_have_the_lineage_recorder_signatures(recorder: type) -> None:
    for name in RECORDER_METHODS:
        assert inspect.signature(getattr(recorder, name)) == inspect.signature(getattr(LineageRecorder, name))
    assert inspect.signature(HandingOffRecorder.hand_off) == inspect.signature(MlflowRecorder.hand_off)


# -- git_state ------------------------------------------------------------------------------------

def test_a_clean_checkout_gives_its_commit_and_is_not_dirty(tmp_path: Path) -> None:
    commit = committed_checkout(tmp_path / "repo")
    assert git_state(str(tmp_path / "repo")) == (commit, False)
    assert git_state(str(tmp_path / "repo" / "code" / "train")) == (commit, False)


def test_an_untracked_file_makes_the_checkout_dirty(tmp_path: Path) -> None:
    commit = committed_checkout(tmp_path / "repo")
    (tmp_path / "repo" / "notes.txt").write_text("not committed\n")
    assert git_state(str(tmp_path / "repo")) == (commit, True)


def test_a_changed_tracked_file_makes_the_checkout_dirty(tmp_path: Path) -> None:
    commit = committed_checkout(tmp_path / "repo")
    (tmp_path / "repo" / "code" / "train" / "train.py").write_text("print('changed')\n")
    assert git_state(str(tmp_path / "repo")) == (commit, True)


def test_a_folder_outside_any_checkout_has_no_commit_and_is_not_dirty(tmp_path: Path) -> None:
    write_project(tmp_path / "plain")
    assert git_state(str(tmp_path / "plain")) == (None, False)


def test_a_repository_with_no_commit_yet_has_no_commit_to_record(tmp_path: Path) -> None:
    write_project(tmp_path / "fresh")
    subprocess.run(["git", "init", "-q", str(tmp_path / "fresh")], check=True)
    # `git rev-parse HEAD` prints "HEAD" here and fails; that is not a commit
    assert git_state(str(tmp_path / "fresh")) == (None, False)


# -- pipeline_code_digest and the source name ----------------------------------------------------------

def test_the_code_digest_is_the_digest_of_each_stages_workdir_digest_by_name(pipeline: ResolvedPipeline) -> None:
    proj = Path(pipeline.base_dir)
    by_stage = {"zeta": code_digest(proj / "code" / "prep"), "alpha": code_digest(proj / "code" / "train"),
                "beta": code_digest(proj / "code" / "prep")}
    assert by_stage["zeta"] != by_stage["alpha"]
    expected = "sha256:" + hashlib.sha256(json.dumps(by_stage, sort_keys=True).encode()).hexdigest()
    assert pipeline_code_digest(pipeline) == expected


def test_the_code_digest_follows_the_code_and_not_the_order_stages_are_listed(tmp_path: Path) -> None:
    listed = """\
name: two
stages:
  {first}: {{run: a, workdir: {first}}}
  {second}: {{run: b, workdir: {second}}}
"""
    for name in ("one", "other"):
        for stage in ("left", "right"):
            (tmp_path / name / stage).mkdir(parents=True)
            (tmp_path / name / stage / "main.py").write_text(f"print({stage!r})\n")
    (tmp_path / "one" / "p.yaml").write_text(listed.format(first="left", second="right"))
    (tmp_path / "other" / "p.yaml").write_text(listed.format(first="right", second="left"))
    one, other = load_pipeline(tmp_path / "one" / "p.yaml"), load_pipeline(tmp_path / "other" / "p.yaml")
    assert one.order == ("left", "right") and other.order == ("right", "left")
    assert pipeline_code_digest(one) == pipeline_code_digest(other)
    (tmp_path / "other" / "left" / "main.py").write_text("print('changed')\n")
    assert pipeline_code_digest(one) != pipeline_code_digest(other)


def test_the_source_name_is_the_pipeline_file_in_its_folder(pipeline: ResolvedPipeline) -> None:
    assert lineage_io._source_name(pipeline) == str(Path(pipeline.base_dir) / "p.yaml")
    typed_relative = dataclasses.replace(pipeline, path="pipelines/p.yaml", base_dir="/src/flows/pipelines")
    assert lineage_io._source_name(typed_relative) == "/src/flows/pipelines/p.yaml"


def test_a_colon_in_a_folder_name_is_not_taken_for_a_decorated_pipelines_function(
        pipeline: ResolvedPipeline) -> None:
    in_a_colon_folder = dataclasses.replace(pipeline, path="/data/runs:2024/p.yaml", base_dir="/data/runs:2024")
    assert lineage_io._source_name(in_a_colon_folder) == "/data/runs:2024/p.yaml"
    colon_in_the_file = dataclasses.replace(pipeline, path="nightly:v2.yaml", base_dir="/src")
    assert lineage_io._source_name(colon_in_the_file) == "/src/nightly:v2.yaml"


def test_the_source_name_of_a_decorated_pipeline_keeps_its_function(pipeline: ResolvedPipeline) -> None:
    decorated = dataclasses.replace(pipeline, path="flows/train.py:nightly", base_dir="/src/flows")
    assert lineage_io._source_name(decorated) == "/src/flows/train.py:nightly"
    in_a_colon_folder = dataclasses.replace(pipeline, path="/mnt/c:d/train.py:nightly", base_dir="/mnt/c:d")
    assert lineage_io._source_name(in_a_colon_folder) == "/mnt/c:d/train.py:nightly"


# -- LineageWriter ---------------------------------------------------------------------------------

def test_a_run_started_in_a_dirty_checkout_is_described_whole(tmp_path: Path) -> None:
    commit = committed_checkout(tmp_path / "repo")
    (tmp_path / "repo" / "scratch.txt").write_text("uncommitted\n")
    pipeline = load_pipeline(tmp_path / "repo" / "p.yaml")
    plan = make_plan(placement("aws/us-east-1", use_spot=True))
    recorder = KeepingRecorder()
    before = time.time()
    LineageWriter(recorder=recorder, warn=no_warning).start("r1", pipeline, {"lr": 0.1}, plan, run_key="key-1")
    after = time.time()
    [(kind, info)] = recorder.calls
    assert kind == "start"
    assert started_between(info, before, after) == RunInfo(
        run_id="r1", pipeline="contract", pipeline_digest=pipeline.digest(), params={"lr": 0.1},
        plan_json=plan.to_json(), git_commit=commit, git_dirty=True, code_digest=pipeline_code_digest(pipeline),
        skyflow_version=skyflow.__version__, started_at=0.0, run_key="key-1", user=user_name(),
        source_name=str((tmp_path / "repo").resolve() / "p.yaml"), source_type="PROJECT")


def test_a_run_started_outside_git_without_a_plan_is_local_with_an_empty_key(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    before = time.time()
    LineageWriter(recorder=recorder, warn=no_warning).start("r2", pipeline, {}, None)
    after = time.time()
    [info] = recorder.infos()
    assert started_between(info, before, after) == RunInfo(
        run_id="r2", pipeline="contract", pipeline_digest=pipeline.digest(), params={}, plan_json=None,
        git_commit=None, git_dirty=False, code_digest=pipeline_code_digest(pipeline),
        skyflow_version=skyflow.__version__, started_at=0.0, run_key="", user=user_name(),
        source_name=str(Path(pipeline.base_dir) / "p.yaml"), source_type="LOCAL")


def test_a_finished_stage_is_recorded_whole(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    writer = LineageWriter(recorder=recorder, warn=no_warning)
    writer.stage("r1", pipeline, stage_row(attempts=2, endpoint="http://10.0.0.5:8000"), inputs=[ROWS],
                 placement={"cloud": "aws", "use_spot": True}, code_digest="sha256:code",
                 mlflow_run_id="mlflow-alpha", run_key="key-1",
                 node_mlflow=[("s3://bucket", "runs/r1/alpha/attempt-2/mlflow.json")])
    [record] = recorder.records()
    assert re.fullmatch(r"[0-9a-f]{32}", record.record_id)
    assert dataclasses.replace(record, record_id="") == StageRecord(
        run_id="r1", stage="alpha", state="succeeded", attempts=2,
        placement={"infra": "aws/us-east-1", "accelerator": "A100:8", "hourly_usd": 32.77, "num_nodes": 2,
                   "use_spot": True, "cloud": "aws", "endpoint": "http://10.0.0.5:8000"},
        resources={"cpus": 8}, duration_s=60.0, estimated_usd=12.5, actual_usd=11.0, egress_gb=3.5,
        egress_usd=0.31, cache_hit=False, inputs=[ROWS], outputs=[MODEL], code_digest="sha256:code",
        log_path="/logs/alpha.log", cache_key="key-alpha", started_at=100.0, ended_at=160.0,
        mlflow_run_id="mlflow-alpha", declared=[DECLARED_MODEL], run_key="key-1", record_id="",
        node_mlflow=[("s3://bucket", "runs/r1/alpha/attempt-2/mlflow.json")])


def test_a_cached_stage_with_unknown_facts_is_recorded_with_their_fallbacks(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    writer = LineageWriter(recorder=recorder, warn=no_warning)
    row = stage_row("zeta", "cached", infra=None, accelerator=None, hourly_usd=None, num_nodes=None,
                    estimated_usd=None, cost_usd=None, egress_gb=None, egress_usd=None, cache_key=None,
                    started_at=None, duration_s=None, log_path=None, outputs={"rows": ROWS})
    writer.stage("r1", pipeline, row)
    [record] = recorder.records()
    assert dataclasses.replace(record, record_id="") == StageRecord(
        run_id="r1", stage="zeta", state="cached", attempts=1,
        placement={"infra": "local", "accelerator": None, "hourly_usd": None, "num_nodes": None, "use_spot": True},
        resources={"cpus": 2, "use_spot": True}, duration_s=0.0, estimated_usd=None, actual_usd=None,
        egress_gb=0.0, egress_usd=0.0, cache_hit=True, inputs=[], outputs=[ROWS], code_digest=None, log_path=None,
        cache_key=None, started_at=160.0, ended_at=160.0, mlflow_run_id=None, declared=[], run_key="",
        record_id="", node_mlflow=[])


def test_a_stage_without_a_start_time_started_its_duration_before_it_ended(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    LineageWriter(recorder=recorder, warn=no_warning).stage("r1", pipeline, stage_row(state="failed", started_at=None))
    [record] = recorder.records()
    assert (record.state, record.started_at, record.ended_at, record.duration_s) == ("failed", 100.0, 160.0, 60.0)


def test_a_stage_without_an_end_time_ends_as_it_is_recorded(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    writer = LineageWriter(recorder=recorder, warn=no_warning)
    before = time.time()
    writer.stage("r1", pipeline, stage_row(started_at=None, ended_at=None))
    writer.stage("r1", pipeline, stage_row(ended_at=None))
    after = time.time()
    first, second = recorder.records()
    assert first.ended_at is not None and before <= first.ended_at <= after
    assert first.started_at == first.ended_at - 60.0
    assert second.ended_at is not None and before <= second.ended_at <= after and second.started_at == 100.0
    assert first.record_id != second.record_id


def test_the_end_of_a_run_is_handed_on_with_its_state_and_totals() -> None:
    recorder = KeepingRecorder()
    LineageWriter(recorder=recorder, warn=no_warning).end("r1", "failed", {"cost_usd": 1.5, "stages": 3})
    assert recorder.calls == [("end", ("r1", "failed", {"cost_usd": 1.5, "stages": 3}))]


def test_a_stage_run_is_opened_for_that_run_and_stage() -> None:
    recorder = KeepingRecorder()
    assert LineageWriter(recorder=recorder, warn=no_warning).open_stage("r1", "alpha") == StageRun(
        SQLITE_URI, "7", "mlflow-alpha")
    assert recorder.calls == [("open", ("r1", "alpha"))]


def test_a_recorder_without_a_uri_or_an_error_is_named_plainly_when_no_run_opens() -> None:
    warnings: list[str] = []
    writer = LineageWriter(recorder=BareRecorder(), warn=warnings.append)
    assert writer.open_stage("r1", "alpha") is None
    assert warnings == ["lineage: no MLflow run could be opened for stage 'alpha' on MLflow tracking URI ; "
                        "stages run without MLFLOW_RUN_ID and their lineage waits in the spool"]


def test_no_warning_when_lineage_is_off() -> None:
    writer = LineageWriter(recorder=NullRecorder(), warn=no_warning)
    assert writer.open_stage("r1", "alpha") is None


def test_a_recorder_that_hands_off_is_not_closed_when_the_run_may_leave_it_to_the_background() -> None:
    recorder = HandingOffRecorder(hands_off=True)
    LineageWriter(recorder=recorder, warn=no_warning, background_ok=True).close()
    assert recorder.calls == [("hand_off", None)]


def test_a_recorder_is_closed_when_it_declines_the_hand_off() -> None:
    recorder = HandingOffRecorder(hands_off=False)
    LineageWriter(recorder=recorder, warn=no_warning, background_ok=True).close()
    assert recorder.calls == [("hand_off", None), ("close", None)]


def test_a_recorder_is_closed_without_asking_when_the_run_may_not_leave_work_behind() -> None:
    recorder = HandingOffRecorder(hands_off=True)
    LineageWriter(recorder=recorder, warn=no_warning, background_ok=False).close()
    assert recorder.calls == [("close", None)]


# -- LineageSubscriber: the run ----------------------------------------------------------------------

def test_the_run_start_names_the_run_by_its_home_id_and_creation_time(tmp_path: Path,
                                                                       pipeline: ResolvedPipeline) -> None:
    home = tmp_path / "home"
    state = run_state(home, pipeline)
    plan = make_plan(placement("aws/us-east-1"))
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline, state=state, home=home)
    before = time.time()
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=plan, params={"epochs": 3}))
    after = time.time()
    key = expected_key(home, "r1", 1000.0)
    [info] = recorder.infos()
    assert started_between(info, before, after) == RunInfo(
        run_id="r1", pipeline="contract", pipeline_digest=pipeline.digest(), params={"epochs": 3},
        plan_json=plan.to_json(), git_commit=None, git_dirty=False, code_digest=pipeline_code_digest(pipeline),
        skyflow_version=skyflow.__version__, started_at=0.0, run_key=key, user=user_name(),
        source_name=str(Path(pipeline.base_dir) / "p.yaml"), source_type="LOCAL")
    assert subscriber.run_key == key and subscriber.plan == plan

    resumed = KeepingRecorder()
    LineageSubscriber(LineageWriter(recorder=resumed, warn=no_warning), pipeline, state=state, home=home)(
        RunEvent(RUN_STARTED, None, run_id="r1"))
    assert [i.run_key for i in resumed.infos()] == [key]


def test_a_run_without_its_state_or_its_home_gets_a_fresh_key_each_time(tmp_path: Path,
                                                                         pipeline: ResolvedPipeline) -> None:
    state = run_state(tmp_path / "home", pipeline)
    for partial in (LineageSubscriber(LineageWriter(recorder=KeepingRecorder()), pipeline, home=tmp_path / "home"),
                    LineageSubscriber(LineageWriter(recorder=KeepingRecorder()), pipeline, state=state)):
        partial(RunEvent(RUN_STARTED, None, run_id="r1"))
        first = partial.run_key
        partial(RunEvent(RUN_STARTED, None, run_id="r1"))
        assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", partial.run_key)
        assert partial.run_key != first


def test_the_run_end_is_handed_on_and_other_events_without_a_row_are_not(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    subscriber(RunEvent(RETRYING, "alpha", message="attempt 2 of 3", run_id="r1"))
    subscriber(RunEvent(LOG, "alpha", message="epoch 1", run_id="r1"))
    subscriber(RunEvent(INPUTS, None, message="sha256:code", run_id="r1"))
    assert recorder.calls == []
    subscriber(RunEvent(run_ended("cancelled"), None, run_id="r1", totals={"cost_usd": 2.25}))
    assert recorder.calls == [("end", ("r1", "cancelled", {"cost_usd": 2.25}))]


# -- LineageSubscriber: a stage ---------------------------------------------------------------------

def test_a_finished_stage_carries_its_inputs_code_plan_run_and_key(tmp_path: Path,
                                                                 pipeline: ResolvedPipeline) -> None:
    home = tmp_path / "home"
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline,
                                   state=run_state(home, pipeline), home=home)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=make_plan(placement("local"))))
    subscriber(RunEvent(INPUTS, "alpha", message="sha256:alpha-code", run_id="r1", inputs=(ROWS,)))
    assert subscriber.open_stage_run("r1", "alpha", "local") == ALPHA_ENV
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(infra="local", accelerator=None)))
    [record] = recorder.records()
    assert dataclasses.replace(record, record_id="") == StageRecord(
        run_id="r1", stage="alpha", state="succeeded", attempts=1,
        placement={"infra": "local", "accelerator": None, "hourly_usd": 32.77, "num_nodes": 2, "use_spot": False,
                   "cloud": "local", "region": None, "zone": None, "instance_type": "local"},
        resources={"cpus": 8}, duration_s=60.0, estimated_usd=12.5, actual_usd=11.0, egress_gb=3.5,
        egress_usd=0.31, cache_hit=False, inputs=[ROWS], outputs=[MODEL], code_digest="sha256:alpha-code",
        log_path="/logs/alpha.log", cache_key="key-alpha", started_at=100.0, ended_at=160.0,
        mlflow_run_id="mlflow-alpha", declared=[DECLARED_MODEL], run_key=expected_key(home, "r1", 1000.0),
        record_id="", node_mlflow=[])


def test_the_plans_choices_for_a_stage_reach_its_record_and_a_stage_the_plan_lacks_adds_none(
        pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=make_plan(placement("aws/us-east-1", use_spot=True))))
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row()))
    subscriber(RunEvent("succeeded", "beta", run_id="r1", row=stage_row("beta", outputs={})))
    alpha, beta = recorder.records()
    assert alpha.placement == {"infra": "aws/us-east-1", "accelerator": "A100:8", "hourly_usd": 32.77, "num_nodes": 2,
                               "use_spot": True, "cloud": "aws", "region": "us-east-1", "zone": "us-east-1a",
                               "instance_type": "p4d.24xlarge"}
    assert beta.placement == {"infra": "aws/us-east-1", "accelerator": "A100:8", "hourly_usd": 32.77,
                              "num_nodes": 2, "use_spot": False}
    assert (alpha.inputs, alpha.code_digest, alpha.mlflow_run_id, alpha.node_mlflow) == ([], None, None, [])


def test_a_stage_finished_before_any_run_start_has_an_empty_key_and_no_plan(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    subscriber(RunEvent("failed", "zeta", run_id="r1", row=stage_row("zeta", "failed", infra=None, outputs={})))
    [record] = recorder.records()
    assert (record.run_id, record.stage, record.state, record.run_key) == ("r1", "zeta", "failed", "")
    assert record.placement == {"infra": "local", "accelerator": "A100:8", "hourly_usd": 32.77, "num_nodes": 2,
                                "use_spot": True}


# -- LineageSubscriber.open_stage_run ---------------------------------------------------------------

def test_a_local_stage_gets_its_runs_variables_and_the_run_is_opened_once(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    assert subscriber.open_stage_run("r1", "alpha", "local") == ALPHA_ENV
    assert subscriber.open_stage_run("r1", "alpha", "local") == ALPHA_ENV
    assert recorder.calls == [("open", ("r1", "alpha"))]
    assert subscriber.stage_runs == {"alpha": StageRun(SQLITE_URI, "7", "mlflow-alpha")}
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(infra="local")))
    [record] = recorder.records()
    assert (record.mlflow_run_id, record.node_mlflow) == ("mlflow-alpha", [])
    assert subscriber.stage_runs == {}


def test_a_local_stage_with_a_store_in_the_plan_sends_its_calls_itself(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1",
                        plan=make_plan(placement("local", store_uri="file:///home/me/.skyflow/artifacts"))))
    assert subscriber.open_stage_run("r1", "alpha", "local") == ALPHA_ENV
    assert subscriber.carried_back == {}
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(infra="local", attempts=2)))
    assert [r.node_mlflow for r in recorder.records()] == [[]]


def test_an_ssh_node_that_cannot_reach_the_sqlite_store_gets_nothing_and_it_is_said_once(
        pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder()
    warnings: list[str] = []
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=warnings.append), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1",
                        plan=make_plan(placement("ssh/lab", store_uri="s3://bucket/store"))))
    assert subscriber.open_stage_run("r1", "alpha", "ssh/lab") == {}
    assert subscriber.open_stage_run("r1", "beta", "ssh/lab") == {}
    assert warnings == ["lineage: stage 'alpha' runs on ssh/lab, which cannot reach MLflow sqlite store "
                        "/srv/lineage/mlflow.db; its own MLflow calls are not sent to its run (set "
                        "MLFLOW_TRACKING_URI to a tracking server the nodes can reach)"]
    assert subscriber.carried_back == {}
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(infra="ssh/lab")))
    [record] = recorder.records()
    assert (record.mlflow_run_id, record.node_mlflow) == ("mlflow-alpha", [])


def test_a_remote_node_that_reaches_a_tracking_server_gets_its_variables_unwarned(pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder("https://mlflow.example.com")
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline)
    assert subscriber.open_stage_run("r1", "alpha", "ssh/lab") == {
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com", "MLFLOW_EXPERIMENT_ID": "7",
        "MLFLOW_RUN_ID": "mlflow-alpha"}


def test_a_wrapper_node_carries_back_each_attempt_of_this_process_after_a_resume(tmp_path: Path,
                                                                                pipeline: ResolvedPipeline) -> None:
    home = tmp_path / "home"
    state = run_state(home, pipeline)
    state.start_attempt("r1", "alpha", 2, "/logs/alpha.log")  # two attempts by the process before the resume
    recorder = KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline, state=state,
                                   home=home)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1",
                        plan=make_plan(placement("aws/us-east-1", store_uri="s3://bucket/store"))))
    assert subscriber.open_stage_run("r1", "alpha", "aws/us-east-1") == ALPHA_ENV
    assert subscriber.carried_back == {"alpha": ("s3://bucket/store", 3)}
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(attempts=4)))
    [record] = recorder.records()
    assert record.node_mlflow == [("s3://bucket/store", "runs/r1/alpha/attempt-3/mlflow.json"),
                                  ("s3://bucket/store", "runs/r1/alpha/attempt-4/mlflow.json")]
    assert (record.mlflow_run_id, subscriber.carried_back) == ("mlflow-alpha", {})


@pytest.mark.parametrize("infra", ["k8s/gke-a100", "aws/us-east-1"])
def test_a_wrapper_node_in_a_first_run_carries_back_from_its_first_attempt(
        infra: str, tmp_path: Path, pipeline: ResolvedPipeline) -> None:
    home, recorder = tmp_path / "home", KeepingRecorder()
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=no_warning), pipeline,
                                   state=run_state(home, pipeline, stages=["zeta"]), home=home)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=make_plan(placement(infra, store_uri="gs://b/s"))))
    assert subscriber.open_stage_run("r1", "alpha", infra) == ALPHA_ENV
    subscriber(RunEvent("succeeded", "alpha", run_id="r1", row=stage_row(infra=infra, attempts=2)))
    assert [r.node_mlflow for r in recorder.records()] == [[("gs://b/s", "runs/r1/alpha/attempt-1/mlflow.json"),
                                                            ("gs://b/s", "runs/r1/alpha/attempt-2/mlflow.json")]]


def test_a_wrapper_node_without_run_state_counts_attempts_from_one(pipeline: ResolvedPipeline) -> None:
    subscriber = LineageSubscriber(LineageWriter(recorder=KeepingRecorder(), warn=no_warning), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1",
                        plan=make_plan(placement("aws/us-east-1", store_uri="s3://bucket/store"))))
    assert subscriber.open_stage_run("r1", "alpha", "aws/us-east-1") == ALPHA_ENV
    assert subscriber.carried_back == {"alpha": ("s3://bucket/store", 1)}


def test_a_wrapper_node_with_no_store_for_its_stage_cannot_carry_back(pipeline: ResolvedPipeline) -> None:
    warnings: list[str] = []
    subscriber = LineageSubscriber(LineageWriter(recorder=KeepingRecorder(), warn=warnings.append), pipeline)
    subscriber(RunEvent(RUN_STARTED, None, run_id="r1", plan=make_plan(placement("aws/us-east-1"))))
    assert subscriber.open_stage_run("r1", "beta", "aws/us-east-1") == {}  # not in the plan
    assert subscriber.open_stage_run("r1", "alpha", "aws/us-east-1") == {}  # in the plan, with no store
    assert subscriber.carried_back == {}
    assert warnings == ["lineage: stage 'beta' runs on aws/us-east-1, which cannot reach MLflow sqlite store "
                        "/srv/lineage/mlflow.db; its own MLflow calls are not sent to its run (set "
                        "MLFLOW_TRACKING_URI to a tracking server the nodes can reach)"]


def test_a_stage_whose_run_cannot_open_gets_nothing_and_is_recorded_without_a_run(
        pipeline: ResolvedPipeline) -> None:
    recorder = KeepingRecorder(away=True)
    warnings: list[str] = []
    subscriber = LineageSubscriber(LineageWriter(recorder=recorder, warn=warnings.append), pipeline)
    assert subscriber.open_stage_run("r1", "alpha", "aws/us-east-1") == {}
    assert subscriber.stage_runs == {} and subscriber.carried_back == {}
    subscriber(RunEvent("failed", "alpha", run_id="r1", row=stage_row(state="failed")))
    assert [(r.mlflow_run_id, r.node_mlflow) for r in recorder.records()] == [(None, [])]
    assert warnings == ["lineage: no MLflow run could be opened for stage 'alpha' on MLflow sqlite store "
                        "/srv/lineage/mlflow.db (connection refused); stages run without MLFLOW_RUN_ID and "
                        "their lineage waits in the spool"]
