"""What one stage's work leaves behind on the FakeBackend: the stage row and attempt rows in run state,
the events it emits, where an attempt's files live, cache hits here and in another store, retries and
restarts, secrets masked out of every message, cancels, outputs committed by the backend, and services."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRecord, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeHandle, FakeResult, FakeService
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.planner import Placement, Plan
from skyflow.planner.plan import EgressCharge
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import INPUTS, RETRYING, SERVING, RunEvent
from skyflow.runner.stage_work import StageWork
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.spec.work import work_key
from skyflow.states import StageState

PIPELINE = """
name: contract
inputs: {{raw: {{uri: raw.txt}}}}
stores:
  gcp/us-central1: {{uri: {far}, create: true}}
  aws/us-east-1: {{uri: {mid}, create: true}}
  local: {{uri: {near}, create: true}}
stages:
  prep: {{run: prep, workdir: src, inputs: {{raw: raw}}, outputs: [rows]}}
  train: {{run: train, num_nodes: 2, retries: 1, inputs: {{rows: prep.rows}}, outputs: [model]}}
  flaky: {{run: flaky, resources: {{job_recovery: {{max_restarts_on_errors: 3}}}}, outputs: [out]}}
  once: {{run: once, cache: false, outputs: [out]}}
  serve: {{run: serve, service: {{readiness_probe: {{path: /health, initial_delay_seconds: 7}}}}}}
"""

STAGES = ["prep", "train", "flaky", "once", "serve"]


def placement(infra: str, *, accelerators: dict[str, float] | None = None, hourly_usd: float = 0.0,
              num_nodes: int = 1, hours: float = 1.0) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m",
                     accelerators=accelerators or {}, use_spot=False, num_nodes=num_nodes, hourly_usd=hourly_usd,
                     hours=hours)


def writes_outputs(launch: StageLaunch) -> FakeResult:
    """Each output gets a file of its own, and prep also keeps a copy of its raw input."""
    for name, path in launch.outputs.items():
        (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
    for path in launch.inputs.values():
        if launch.stage == "prep":
            (launch.outputs["rows"] / "raw-copy.txt").write_bytes(path.read_bytes() if path.is_file()
                                                                   else (path / "raw.txt").read_bytes())
    return FakeResult()


class Run:
    """One pipeline on disk, its run state, and a context per run with stages placed as asked."""

    def __init__(self, tmp_path: Path, backend: FakeBackend, **where: Placement) -> None:
        self.tmp_path = tmp_path
        (tmp_path / "raw.txt").write_text("raw data")
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / "prep.py").write_text("print('prep')\n")
        (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(far=tmp_path / "far", mid=tmp_path / "mid",
                                                                near=tmp_path / "near"))
        self.pipeline = load_pipeline(tmp_path / "pipeline.yaml")
        self.stages = {name: placement("local") for name in STAGES} | where
        self.egress: tuple[EgressCharge, ...] = ()
        self.events: list[RunEvent] = []
        self.emit: Callable[[RunEvent], None] = self.events.append
        self.state = RunStore(tmp_path / "home" / "state.db")
        self.backend = backend
        self.backends = BackendPool(BackendContext(), {"local": backend, "skypilot": backend,
                                                       "ssh": backend})
        self.secrets: dict[str, str] = {}
        self.options = RunOptions(retry_base_delay_s=0.0, env=dict(os.environ))

    def context(self, run_id: str = "r1") -> RunContext:
        plan = Plan(pipeline="contract", objective="cost", stages=dict(self.stages), egress=self.egress,
                    total_usd=0.0, total_hours=1.0)
        return RunContext(pipeline=self.pipeline, plan=plan, state=self.state, backends=self.backends,
                          options=self.options, emit=self.emit, home=self.tmp_path / "home",
                          secrets=dict(self.secrets), run_id=run_id)

    def start(self, run_id: str = "r1") -> None:
        self.state.create_run(run_id, "contract", "pipeline.yaml", "d", {}, {}, None, STAGES, None)

    def stage(self, name: str, run_id: str = "r1", *, finish: bool = True) -> StageWork:
        """``name`` run to its outcome, recorded in run state as the run loop does."""
        work = StageWork(self.context(run_id), name)
        work.outcome = work.run()  # type: ignore[attr-defined]
        if finish:
            self.state.finish_stage(run_id, name, work.outcome.state, work.outcome.outputs)  # type: ignore[attr-defined]
        return work

    def attempts(self, name: str, run_id: str = "r1") -> list[tuple[int, int | None, str | None, bool]]:
        with sqlite3.connect(self.state.path) as db:
            rows = db.execute("SELECT attempt, exit_code, reason, ended_at IS NOT NULL FROM attempts WHERE run_id=? "
                              "AND stage=? ORDER BY attempt", (run_id, name)).fetchall()
        return [(a, code, reason, bool(ended)) for a, code, reason, ended in rows]

    def transfers(self, name: str, run_id: str = "r1") -> list[tuple[str, int, float]]:
        with sqlite3.connect(self.state.path) as db:
            rows = db.execute("SELECT artifact, bytes, egress_usd FROM transfers WHERE run_id=? AND stage=? "
                              "ORDER BY rowid", (run_id, name)).fetchall()
        return [tuple(r) for r in rows]

    def transfer_times(self, name: str, run_id: str = "r1") -> list[tuple[str, float]]:
        with sqlite3.connect(self.state.path) as db:
            return db.execute("SELECT artifact, seconds FROM transfers WHERE run_id=? AND stage=? ORDER BY rowid",
                              (run_id, name)).fetchall()

    def attempt_dir(self, name: str, attempt: int, run_id: str = "r1") -> Path:
        return self.tmp_path / "home" / "runs" / run_id / name / f"attempt-{attempt}"


def raw_digest(tmp_path: Path) -> str:
    """The digest the raw input has once committed (the same in every store)."""
    return artifact_io.import_external(open_store(str(tmp_path / "scratch"), create=True), "raw",
                                       str(tmp_path / "raw.txt")).digest


# -- a batch stage that succeeds ---------------------------------------------------------------------------
def test_a_successful_stage_records_its_placement_and_attempt_in_run_state(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs),
              train=placement("local", accelerators={"A100": 1}, hourly_usd=2.5, num_nodes=2, hours=2.0))
    run.start()
    rows = run.stage("prep").outcome.outputs["rows"]  # type: ignore[attr-defined]
    work = run.stage("train")
    assert (work.outcome.state, work.outcome.message) == (StageState.SUCCEEDED, "")  # type: ignore[attr-defined]
    row = run.state.get_stage("r1", "train")
    log = run.attempt_dir("train", 1) / "stage.log"
    assert (row.infra, row.accelerator, row.hourly_usd, row.num_nodes, row.estimated_usd) == ("local", "A100", 2.5, 2,
                                                                                              10.0)
    assert row.work_key == work_key("contract", "train", run.pipeline.stages["train"])
    assert (row.attempts, row.log_path, row.remote_handle) == (1, str(log), '{"fake": "r1/train/1"}')
    # the outputs are recorded in the stage's store under the cache key run state holds
    found = artifact_io.cache_lookup(open_store(str(tmp_path / "near")), row.cache_key or "")
    assert found is not None and found[0] == work.outcome.outputs  # type: ignore[attr-defined]
    assert run.attempts("train") == [(1, 0, "", True)]
    assert run.transfers("train") == [(f"rows={rows.digest}", rows.size_bytes, 0.0)]  # fetched from its store


def test_an_attempt_reads_inputs_and_writes_outputs_under_its_own_folder(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    run.stage("prep")
    run.stage("train")
    [_, launch] = run.backend.launches
    folder = run.attempt_dir("train", 1)
    assert (launch.run_id, launch.stage, launch.attempt) == ("r1", "train", 1)
    assert dict(launch.inputs) == {"rows": folder / "inputs" / "rows"}
    assert dict(launch.outputs) == {"model": folder / "outputs" / "model"}
    assert launch.log_path == folder / "stage.log"
    assert launch.placement.store_uri == str(tmp_path / "near")
    prep_rows = run.state.get_stage("r1", "prep").outputs["rows"]
    assert launch.input_refs == {"rows": prep_rows}
    # the inputs are dropped once the outputs are committed; the outputs stay for a look
    assert not (folder / "inputs").exists()
    assert (folder / "outputs" / "model" / "model.txt").read_text() == "train wrote model"


def test_the_inputs_event_names_each_input_where_lineage_finds_it(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    prep = run.stage("prep")
    run.stage("train")
    rows = prep.outcome.outputs["rows"]  # type: ignore[attr-defined]
    code = artifact_io.code_digest(tmp_path / "src")
    assert code != artifact_io.code_digest(None)
    inputs = [e for e in run.events if e.kind == INPUTS]
    assert inputs == [
        RunEvent(INPUTS, "prep", code, run_id="r1",
                 inputs=(ArtifactRecord("raw", str(tmp_path / "raw.txt"), raw_digest(tmp_path), 8),)),
        RunEvent(INPUTS, "train", artifact_io.code_digest(None), run_id="r1",
                 inputs=(ArtifactRecord("prep.rows", rows.uri, rows.digest, rows.size_bytes),)),
    ]
    running = [e for e in run.events if e.kind == StageState.RUNNING]
    assert running == [RunEvent(StageState.RUNNING, "prep", "local", run_id="r1"),
                       RunEvent(StageState.RUNNING, "train", "local", run_id="r1")]


@dataclass
class Opener:
    """Opens each stage's MLflow run: remembers what it was asked, hands back the run's variables."""

    opened: list[tuple[str, str, str]] = field(default_factory=list)

    def open_stage_run(self, run_id: str, stage: str, infra: str) -> dict[str, str]:
        self.opened.append((run_id, stage, infra))
        return {"MLFLOW_RUN_ID": f"mlflow-{stage}"}


def test_the_stage_mlflow_run_opens_once_and_its_variables_reach_every_attempt(tmp_path: Path) -> None:
    fails_first = FakeBackend(lambda launch: FakeResult(exit_code=1) if (launch.stage, launch.attempt) == ("train", 1)
                              else writes_outputs(launch))
    run = Run(tmp_path, fails_first, train=placement("ssh/lab"))
    run.start()
    run.stage("prep")
    ctx = run.context()
    ctx.stage_runs = Opener()
    assert StageWork(ctx, "train").run().state == StageState.SUCCEEDED
    assert ctx.stage_runs.opened == [("r1", "train", "ssh/lab")]
    assert [launch.env["MLFLOW_RUN_ID"] for launch in fails_first.launches if launch.stage == "train"] == [
        "mlflow-train", "mlflow-train"]


def test_a_stage_that_writes_nothing_to_an_output_fails_without_a_retry(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult())
    run = Run(tmp_path, backend)
    run.start()
    work = run.stage("flaky")
    path = run.attempt_dir("flaky", 1) / "outputs" / "out"
    assert (work.outcome.state, work.outcome.message) == (  # type: ignore[attr-defined]
        StageState.FAILED, f"artifact 'out' at {path}: the stage wrote nothing to this output")
    assert len(backend.launches) == 1
    assert artifact_io.cache_lookup(open_store(str(tmp_path / "near")), run.state.get_stage("r1", "flaky").cache_key
                                    or "") is None


def test_outputs_the_backend_committed_itself_are_taken_as_they_are(tmp_path: Path) -> None:
    nodes = tmp_path / "on-the-nodes"
    committed: dict[str, ArtifactRecord] = {}

    def commits_on_its_nodes(launch: StageLaunch) -> FakeResult:
        if launch.stage != "train":
            return writes_outputs(launch)
        (nodes / "model").mkdir(parents=True)
        (nodes / "model" / "weights.txt").write_text("trained remotely")
        committed.update(artifact_io.commit_outputs(open_store(str(tmp_path / "mid")), {"model": nodes / "model"}))
        return FakeResult(outputs=committed)

    run = Run(tmp_path, FakeBackend(commits_on_its_nodes))
    run.start()
    run.stage("prep")
    work = run.stage("train")
    assert (work.outcome.state, work.outcome.message) == (StageState.SUCCEEDED, "")  # type: ignore[attr-defined]
    assert work.outcome.outputs == committed  # type: ignore[attr-defined]
    assert committed["model"].store_uri == str(tmp_path / "mid")


# -- the cache -----------------------------------------------------------------------------------------------
def test_a_second_run_of_the_same_work_is_a_verified_cache_hit_in_its_store(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    run.start("r0")
    first = run.stage("prep", "r0").outcome  # type: ignore[attr-defined]
    run.start("r1")
    again = run.stage("prep", "r1").outcome  # type: ignore[attr-defined]
    found = artifact_io.cache_lookup(open_store(str(tmp_path / "near")), run.state.get_stage("r1", "prep").cache_key
                                     or "")
    assert found is not None
    assert (again.state, again.message, again.outputs) == (StageState.CACHED, f"verified cache hit: {found[1]}",
                                                           first.outputs)
    assert found[1].startswith("1 manifest re-hashed, ")
    assert [launch.stage for launch in backend.launches] == ["prep"]
    assert [e.kind for e in run.events if e.stage == "prep"] == [INPUTS, StageState.RUNNING, INPUTS]


def test_no_cache_runs_the_stage_again_despite_a_cached_copy(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    run.start("r0")
    run.stage("prep", "r0")
    run.start("r1")
    run.options = RunOptions(retry_base_delay_s=0.0, env=dict(os.environ), no_cache=True)
    again = run.stage("prep", "r1").outcome  # type: ignore[attr-defined]
    assert (again.state, again.message) == (StageState.SUCCEEDED, "")
    assert [launch.stage for launch in backend.launches] == ["prep", "prep"]


def test_a_stage_with_cache_off_leaves_no_cache_entry_and_runs_every_time(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    for run_id in ("r0", "r1"):
        run.start(run_id)
        outcome = run.stage("once", run_id).outcome  # type: ignore[attr-defined]
        assert (outcome.state, outcome.message) == (StageState.SUCCEEDED, "")
        key = run.state.get_stage(run_id, "once").cache_key
        assert artifact_io.cache_lookup(open_store(str(tmp_path / "near")), key or "") is None
    assert [launch.stage for launch in backend.launches] == ["once", "once"]


def test_a_failed_stage_leaves_no_cache_entry(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(lambda launch: FakeResult(exit_code=3)))
    run.start()
    outcome = run.stage("prep").outcome  # type: ignore[attr-defined]
    assert outcome.state == StageState.FAILED
    key = run.state.get_stage("r1", "prep").cache_key
    assert artifact_io.cache_lookup(open_store(str(tmp_path / "near")), key or "") is None


def test_a_cached_copy_in_another_store_is_moved_here_verified_and_recorded(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend, prep=placement("gcp/us-central1"))
    run.start("r0")
    there = run.stage("prep", "r0").outcome.outputs["rows"]  # type: ignore[attr-defined]
    run.stages["prep"] = placement("local")
    run.start("r1")
    moved = run.stage("prep", "r1").outcome  # type: ignore[attr-defined]
    # two blobs in the output: its own file, copied, and the raw copy, already here as the raw input
    assert (moved.state, moved.message) == (
        StageState.CACHED, f"verified cache hit moved from {tmp_path / 'far'}: manifests re-hashed, 1 blobs re-hashed "
                           "as they were copied, 1 already here at their sizes")
    rows = moved.outputs["rows"]
    assert (rows.name, rows.digest, rows.size_bytes, rows.store_uri) == ("rows", there.digest, there.size_bytes,
                                                                          str(tmp_path / "near"))
    assert run.transfers("prep", "r1") == [(f"import raw={raw_digest(tmp_path)}", 8, 0.0),
                                           (f"rows={there.digest}", len("prep wrote rows"), 0.0)]  # bytes copied
    assert [launch.stage for launch in backend.launches] == ["prep"]
    # and recorded in this store's cache: the next run finds it here
    run.start("r2")
    here = run.stage("prep", "r2").outcome  # type: ignore[attr-defined]
    assert (here.state, here.outputs) == (StageState.CACHED, moved.outputs)
    assert here.message.startswith("verified cache hit: 1 manifest re-hashed, ")


def test_outputs_run_state_places_in_this_very_store_but_its_cache_dropped_are_computed_again(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    run.start("r0")
    run.stage("prep", "r0")
    artifact_io.cache_forget(open_store(str(tmp_path / "near")), run.state.get_stage("r0", "prep").cache_key)
    run.start("r1")
    again = run.stage("prep", "r1").outcome  # type: ignore[attr-defined]
    assert (again.state, again.message) == (StageState.SUCCEEDED, "")
    assert [launch.stage for launch in backend.launches] == ["prep", "prep"]


# -- retries, restarts, secrets --------------------------------------------------------------------------------
def test_a_failed_attempt_is_retried_as_the_stage_allows_and_each_attempt_recorded(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult(exit_code=1) if launch.stage == "train" else writes_outputs(launch))
    run = Run(tmp_path, backend)
    run.start()
    run.stage("prep")
    outcome = run.stage("train").outcome  # type: ignore[attr-defined]
    logs = [run.attempt_dir("train", n) / "stage.log" for n in (1, 2)]
    assert (outcome.state, outcome.message) == (StageState.FAILED, f"attempt 2: exit code 1 (log: {logs[1]})")
    assert [e for e in run.events if e.kind == RETRYING] == [
        RunEvent(RETRYING, "train", f"attempt 1: exit code 1 (log: {logs[0]}); retry 1 of 1", run_id="r1")]
    assert run.attempts("train") == [(1, 1, "exit code 1", True), (2, 1, "exit code 1", True)]
    assert run.state.get_stage("r1", "train").attempts == 2
    # the inputs of a failed attempt stay, to look into
    assert (run.attempt_dir("train", 2) / "inputs" / "rows").is_dir()


def test_restarts_on_errors_are_counted_apart_from_retries(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult(exit_code=1))
    run = Run(tmp_path, backend)
    run.start()
    outcome = run.stage("flaky").outcome  # type: ignore[attr-defined]
    retries = [(e.stage, e.message.rpartition("; ")[2]) for e in run.events if e.kind == RETRYING]
    assert retries == [("flaky", f"restart {n} of 3 on error") for n in (1, 2, 3)]
    assert (outcome.state, outcome.message) == (
        StageState.FAILED, f"attempt 4: exit code 1 (log: {run.attempt_dir('flaky', 4) / 'stage.log'})")
    assert len(backend.launches) == 4


def test_a_resumed_stage_numbers_its_attempts_after_the_ones_run_state_has(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    run.start()
    run.state.set_stage("r1", "once", attempts=2)
    run.stage("once")
    assert [launch.attempt for launch in backend.launches] == [3]
    assert run.attempts("once") == [(3, 0, "", True)]
    assert run.state.get_stage("r1", "once").log_path == str(run.attempt_dir("once", 3) / "stage.log")


def test_a_secret_value_never_reaches_a_message_run_state_or_an_event(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult(exit_code=1, reason="login with hunter2 refused")
                          if launch.stage == "train" else writes_outputs(launch))
    run = Run(tmp_path, backend)
    run.secrets = {"TOKEN": "hunter2"}
    run.start()
    run.stage("prep")
    outcome = run.stage("train").outcome  # type: ignore[attr-defined]
    logs = [run.attempt_dir("train", n) / "stage.log" for n in (1, 2)]
    assert outcome.message == f"attempt 2: login with ******** refused (log: {logs[1]})"
    assert [e.message for e in run.events if e.kind == RETRYING] == [
        f"attempt 1: login with ******** refused (log: {logs[0]}); retry 1 of 1"]
    assert run.attempts("train") == [(1, 1, "login with ******** refused", True),
                                     (2, 1, "login with ******** refused", True)]


def test_without_secrets_messages_are_left_as_they_are(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult(exit_code=1, reason="login with ******** refused"))
    run = Run(tmp_path, backend)
    run.start()
    outcome = run.stage("once").outcome  # type: ignore[attr-defined]
    assert outcome.message == f"attempt 1: login with ******** refused (log: {run.attempt_dir('once', 1)}/stage.log)"


def test_the_cache_key_follows_secret_names_not_their_values(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    keys = []
    for run_id, secrets in (("r0", {}), ("r1", {"TOKEN": "a"}), ("r2", {"TOKEN": "b"})):
        run.secrets = secrets
        run.start(run_id)
        run.options = RunOptions(retry_base_delay_s=0.0, env=dict(os.environ), no_cache=True)
        run.stage("once", run_id)
        keys.append(run.state.get_stage(run_id, "once").cache_key)
    assert keys[0] != keys[1] and keys[1] == keys[2]


# -- cancels and handles ---------------------------------------------------------------------------------------
def test_a_cancel_that_comes_while_the_stage_launches_stops_it(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend())
    run.start()
    ctx = run.context()

    def cancelled_meanwhile(launch: StageLaunch) -> FakeResult:
        ctx.cancel_requested.set()
        return FakeResult(block=True)

    run.backend.handler = cancelled_meanwhile
    outcome = StageWork(ctx, "once").run()
    assert (outcome.state, outcome.message, outcome.outputs) == (StageState.CANCELLED, "cancelled", {})
    assert run.attempts("once") == [(1, -15, "cancelled", True)]
    assert ctx.handles == {}


class StoppedElsewhere(FakeBackend):
    """A backend whose attempts are stopped from outside this runner (`skyflow down`, a cluster's own cancel)."""

    def launch(self, launch: StageLaunch) -> FakeHandle:
        handle = super().launch(launch)
        handle.cancel()
        return handle


def test_an_attempt_stopped_from_outside_ends_cancelled_and_is_not_retried(tmp_path: Path) -> None:
    backend = StoppedElsewhere(writes_outputs)
    run = Run(tmp_path, backend)
    run.start()
    outcome = run.stage("flaky").outcome  # type: ignore[attr-defined]
    assert (outcome.state, outcome.message) == (StageState.CANCELLED, "cancelled")
    assert len(backend.launches) == 1


@dataclass
class GroupHandle(FakeHandle):
    group: int = 0

    @property
    def process_groups(self) -> list[int]:
        return [self.group]


class WithProcessGroups(FakeBackend):
    """Attempts and services that run in a live process group (this test's own)."""

    def launch(self, launch: StageLaunch) -> FakeHandle:
        plain = super().launch(launch)
        return GroupHandle(plain.launch, plain.result, group=os.getpgrp())

    def serve(self, launch: StageLaunch) -> FakeService:
        service = super().serve(launch)
        return GroupService(service.endpoint, None, group=os.getpgrp())


@dataclass
class GroupService(FakeService):
    group: int = 0

    @property
    def process_groups(self) -> list[int]:
        return [self.group]


def test_the_process_groups_of_an_attempt_are_recorded_and_its_handle_let_go(tmp_path: Path) -> None:
    run = Run(tmp_path, WithProcessGroups(writes_outputs))
    run.start()
    ctx = run.context()
    assert StageWork(ctx, "once").run().state == StageState.SUCCEEDED
    assert run.state.get_stage("r1", "once").process_groups == [os.getpgrp()]
    assert ctx.handles == {}


# -- services ----------------------------------------------------------------------------------------------------
def test_a_ready_service_is_a_success_that_names_its_endpoint(tmp_path: Path) -> None:
    backend = FakeBackend()
    run = Run(tmp_path, backend, serve=placement("ssh/lab"))
    run.start()
    outcome = run.stage("serve", finish=False).outcome  # type: ignore[attr-defined]
    assert outcome == type(outcome)(StageState.SUCCEEDED, "serving at http://fake/serve on fake; stop with "
                                                          "`skyflow down r1`", {}, "http://fake/serve", [])
    row = run.state.get_stage("r1", "serve")
    assert (row.attempts, row.remote_handle) == (1, '{"fake-service": "serve"}')
    assert run.attempts("serve") == [(1, 0, "ready", True)]
    assert [e for e in run.events if e.kind == SERVING] == [RunEvent(SERVING, "serve", "http://fake/serve",
                                                                     run_id="r1")]
    [launch] = backend.launches
    assert (launch.run_id, launch.stage, launch.attempt) == ("r1", "serve", 1)


def test_a_service_on_this_machine_names_no_backend_and_records_its_process_groups(tmp_path: Path) -> None:
    run = Run(tmp_path, WithProcessGroups())
    run.start()
    outcome = run.stage("serve", finish=False).outcome  # type: ignore[attr-defined]
    assert (outcome.state, outcome.message) == (StageState.SUCCEEDED, "serving at http://fake/serve; stop with "
                                                                      "`skyflow down r1`")
    assert (outcome.endpoint, outcome.service_groups) == ("http://fake/serve", [os.getpgrp()])
    row = run.state.get_stage("r1", "serve")
    assert (row.process_groups, row.remote_handle) == ([os.getpgrp()], None)


class NotReady(FakeBackend):
    """Services that never answer their probe: why is given at construction."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem
        self.services: list[FakeService] = []
        self.waited: list[tuple[object, float]] = []

    def serve(self, launch: StageLaunch) -> FakeService:
        backend = self

        class Service(FakeService):
            def wait_ready(self, cancel: object, timeout_s: float) -> str | None:
                backend.waited.append((cancel, timeout_s))
                return backend.problem

        service = Service(f"http://fake/{launch.stage}", {"fake-service": launch.stage})
        self.services.append(service)
        return service


def test_a_service_that_never_gets_ready_is_stopped_and_fails(tmp_path: Path) -> None:
    backend = NotReady("timed out after 7 s")
    run = Run(tmp_path, backend)
    run.start()
    ctx = run.context()
    outcome = StageWork(ctx, "serve").run()
    log = run.attempt_dir("serve", 1) / "stage.log"
    assert outcome == type(outcome)(StageState.FAILED, f"service timed out after 7 s (log: {log})")
    assert [s.stopped for s in backend.services] == [True]
    # it waited as long as the probe's initial delay, or until the run is cancelled
    assert backend.waited == [(ctx.cancel_requested, 7.0)]
    assert run.attempts("serve") == [(1, 1, "timed out after 7 s", True)]
    assert [e.kind for e in run.events if e.kind == SERVING] == []


def test_a_service_cancelled_before_it_got_ready_ends_cancelled(tmp_path: Path) -> None:
    backend = NotReady("cancelled")
    run = Run(tmp_path, backend)
    run.start()
    outcome = run.stage("serve", finish=False).outcome  # type: ignore[attr-defined]
    log = run.attempt_dir("serve", 1) / "stage.log"
    assert (outcome.state, outcome.message) == (StageState.CANCELLED, f"service cancelled (log: {log})")
    assert run.attempts("serve") == [(1, 1, "cancelled", True)]


# -- inputs moved between stores, or found damaged ---------------------------------------------------------------
def test_an_input_moved_from_another_store_is_charged_at_the_planned_egress_rate(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs), prep=placement("gcp/us-central1"),
              train=placement("aws/us-east-1"))
    run.start()
    rows = run.stage("prep").outcome.outputs["rows"]  # type: ignore[attr-defined]
    assert rows.size_bytes == 23
    run.egress = (EgressCharge("prep.rows", "train", "gcp/us-central1", "aws/us-east-1", size_gb=23e-9, usd=0.5),)
    outcome = run.stage("train").outcome  # type: ignore[attr-defined]
    assert (outcome.state, outcome.message) == (StageState.SUCCEEDED, "")
    assert run.transfers("train") == [(f"rows={rows.digest}", 23, pytest.approx(0.5)),
                                      (f"rows={rows.digest}", 23, 0.0)]
    row = run.state.get_stage("r1", "train")
    assert (row.egress_gb, row.egress_usd) == (pytest.approx(23e-9), pytest.approx(0.5))  # type: ignore[comparison-overlap]  # pytest.approx equals a float
    assert outcome.outputs["model"].store_uri == str(tmp_path / "mid")


def damage_blobs(store_dir: Path) -> None:
    store = open_store(str(store_dir))
    for key in store.list_keys("blobs"):
        store.write_bytes(key, b"X" * store.size_of(key))  # type: ignore[operator]


def damaged_once_its_inputs_are_known(run: Run, *, edit_raw: bool = False) -> None:
    """The store gets damaged right after the stage's inputs are committed (a disk or bucket failing)."""

    damaged: list[bool] = []

    def emit(event: RunEvent) -> None:
        run.events.append(event)
        if event.kind == INPUTS and not damaged:
            damaged.append(True)
            damage_blobs(run.tmp_path / "near")
            if edit_raw:
                (run.tmp_path / "raw.txt").write_text("raw data, edited since")

    run.emit = emit


def test_a_pipeline_input_damaged_in_the_store_is_imported_again_from_where_it_lives(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    damaged_once_its_inputs_are_known(run)
    outcome = run.stage("prep").outcome  # type: ignore[attr-defined]
    digest = raw_digest(tmp_path)
    assert (outcome.state, outcome.message) == (StageState.SUCCEEDED, "")
    assert run.transfers("prep") == [(f"import raw={digest}", 8, 0.0), (f"import raw={digest}", 8, 0.0),
                                     (f"raw={digest}", 8, 0.0)]
    assert [seconds for *_, seconds in run.transfer_times("prep")][1] == 0.0  # the import again is not timed
    assert (run.attempt_dir("prep", 1) / "outputs" / "rows" / "raw-copy.txt").read_text() == "raw data"


def test_a_pipeline_input_damaged_and_changed_since_it_was_imported_fails_asking_to_run_again(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    before = raw_digest(tmp_path)
    damaged_once_its_inputs_are_known(run, edit_raw=True)
    outcome = run.stage("prep").outcome  # type: ignore[attr-defined]
    after = raw_digest(tmp_path)
    assert outcome.state == StageState.FAILED
    assert outcome.message.startswith(f"artifact 'raw' at {tmp_path / 'raw.txt'}: its copy in the store was damaged (")
    assert outcome.message.endswith(f"), and the data changed since this run imported it ({before} then, {after} "
                                    "now); run again to use the new data")
    assert run.backend.launches == []


def test_a_stage_input_damaged_in_the_store_sends_its_producer_back_and_drops_its_cache_entry(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    rows = run.stage("prep").outcome.outputs["rows"]  # type: ignore[attr-defined]
    key = run.state.get_stage("r1", "prep").cache_key or ""
    damaged_once_its_inputs_are_known(run)
    outcome = run.stage("train", finish=False).outcome  # type: ignore[attr-defined]
    assert (outcome.state, outcome.message) == (
        StageState.PENDING,
        f"input 'rows' (prep.rows, {rows.digest}) was damaged in the store; 'prep' runs again first")
    [event] = [e for e in run.events if e.kind == RETRYING]
    assert (event.stage, event.run_id) == ("prep", "r1")
    assert event.message.startswith(f"output 'rows' ({rows.digest}) was found damaged: ")
    assert event.message.endswith("; running 'prep' again")
    prep = run.state.get_stage("r1", "prep")
    assert (prep.state, prep.message, prep.heals) == ("pending", event.message, 1)
    assert artifact_io.cache_lookup(open_store(str(tmp_path / "near")), key) is None
    assert run.backend.launches[1:] == []


class _NoRemoteHandle(FakeHandle):
    @property
    def remote(self) -> None:  # type: ignore[override]
        return None  # what the local backend's handles report: nothing to find the attempt by elsewhere


class _LocalLikeBackend(FakeBackend):
    def launch(self, launch: StageLaunch) -> FakeHandle:
        handle = super().launch(launch)
        return _NoRemoteHandle(handle.launch, handle.result)


def test_a_stage_whose_handle_reports_no_remote_records_none(tmp_path: Path) -> None:
    run = Run(tmp_path, _LocalLikeBackend(writes_outputs))
    run.start()
    work = run.stage("prep")
    assert (work.outcome.state, work.outcome.message) == (StageState.SUCCEEDED, "")  # type: ignore[attr-defined]
    assert run.state.get_stage("r1", "prep").remote_handle is None
