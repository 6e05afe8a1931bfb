"""What the run loop promises callers, `skyflow status` and event subscribers, run on the FakeBackend.

Run ids; what a run records when it starts and ends; each finished stage's row and event (message, time,
cost, endpoint, process groups); skips below a failure; parallelism and scheduling order; a stage sent
back to pending when its input was damaged; a cancel; and a resume that redoes unfinished stages from a
clean slate and stops what a dead runner left through the right backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from skyflow.artifacts import open_store
from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import FakeBackend, FakeHandle, FakeResult, FakeService
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.errors import RunError
from skyflow.planner import Placement, Plan
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import INPUTS, RETRYING, RUN_STARTED, EventBus, RunEvent
from skyflow.runner.loop import RunLoop, Schedule, check_run_id, new_run_id
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState

RULE = ("is not allowed: use up to 128 letters, digits, '.', '_' or '-', starting with a letter or digit "
        "(e.g. --run-id ci-3f2a9c1)")


def _place(infra: str = "local", *, hourly: float = 0.0, nodes: int = 1) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m", accelerators={},
                     use_spot=False, num_nodes=nodes, hourly_usd=hourly, hours=1.0)


def writes_outputs(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
    return FakeResult()


@dataclass
class GroupedHandle(FakeHandle):
    groups: tuple[int, ...] = ()

    @property
    def process_groups(self) -> list[int]:
        return list(self.groups)


@dataclass
class GroupedService(FakeService):
    groups: tuple[int, ...] = ()

    @property
    def process_groups(self) -> list[int]:
        return list(self.groups)


class GroupedBackend(FakeBackend):
    """A FakeBackend whose attempts and services report the given process groups, as local ones do."""

    def __init__(self, handler: Callable[[StageLaunch], FakeResult], groups: tuple[int, ...]) -> None:
        super().__init__(handler)
        self.groups = groups

    def launch(self, launch: StageLaunch) -> GroupedHandle:
        handle = super().launch(launch)
        return GroupedHandle(handle.launch, handle.result, groups=self.groups)

    def serve(self, launch: StageLaunch) -> GroupedService:
        service = super().serve(launch)
        return GroupedService(service.endpoint, service.remote, groups=self.groups)


@pytest.fixture
def group() -> Iterator[int]:
    """A real process group of our own (a `sleep` leading its session), as a local attempt leaves."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


class Run:
    """A pipeline, its plan and run state under ``tmp_path``, with a local and a cloud backend."""

    def __init__(self, tmp_path: Path, yaml: str, placements: dict[str, Placement], *,
                 local: FakeBackend | None = None, cloud: FakeBackend | None = None, total_usd: float = 0.0,
                 **options: object) -> None:
        (tmp_path / "pipeline.yaml").write_text(yaml)
        self.pipeline = load_pipeline(tmp_path / "pipeline.yaml")
        self.plan = Plan(pipeline=self.pipeline.name, objective="cost", stages=placements, egress=(),
                         total_usd=total_usd, total_hours=1.0)
        self.home = tmp_path / "home"
        self.local = local or FakeBackend(writes_outputs)
        self.cloud = cloud or FakeBackend(writes_outputs)
        self.events: list[RunEvent] = []
        self.bus = EventBus([self.events.append])
        self.options = RunOptions(retry_base_delay_s=0.0, env=dict(os.environ), **options)  # type: ignore[arg-type]

    @property
    def state(self) -> RunStore:
        return RunStore(self.home / "state.db")

    def loop(self) -> RunLoop:
        pool = BackendPool(BackendContext(), {"local": self.local, "skypilot": self.cloud})
        return RunLoop(RunContext(pipeline=self.pipeline, plan=self.plan, state=RunStore(self.home / "state.db"),
                                  backends=pool, options=self.options, emit=self.bus, home=self.home, secrets={}))

    def start(self, run_id: str = "r1", **kwargs: object) -> str:
        args = {"target": "pipeline.yaml", "overrides": {}, "params": {}, "lineage": False, **kwargs}
        return self.loop().start(run_id, **args)  # type: ignore[arg-type]

    def launched(self, backend: FakeBackend | None = None) -> list[tuple[str, int]]:
        return [(launch.stage, launch.attempt) for launch in (backend or self.local).launches]


def damage_blobs(store_dir: Path) -> None:
    store = open_store(str(store_dir))
    for key in store.list_keys("blobs"):
        store.write_bytes(key, b"X" * store.size_of(key))  # type: ignore[operator]


# -- run ids ------------------------------------------------------------------------------------


def test_a_new_run_id_is_the_pipeline_the_local_time_and_four_hex_digits() -> None:
    before = time.time()
    run_id = new_run_id("etl")
    after = time.time()
    found = re.fullmatch(r"etl-(\d{8}-\d{6})-([0-9a-f]{4})", run_id)
    assert found is not None, run_id
    stamp = time.mktime(time.strptime(found[1], "%Y%m%d-%H%M%S"))
    assert int(before) <= stamp <= after
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["a", "ci-3f2a9c1", "A1._-z", "x" * 128])
def test_a_run_id_of_letters_digits_dots_underscores_and_dashes_is_kept(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "-x", ".hidden", "../etc", "a b", "a/b", "x" * 129])
def test_a_run_id_that_cannot_name_a_directory_is_refused_with_the_rule(run_id: str) -> None:
    with pytest.raises(RunError) as raised:
        check_run_id(run_id)
    assert str(raised.value) == f"run id {run_id!r} {RULE}"


# -- what a run records ---------------------------------------------------------------------------

TWO = """
name: two
stages:
  prep: {run: prep, outputs: [rows]}
  train: {run: train, inputs: {rows: prep.rows}, outputs: [model]}
"""


def test_a_run_records_what_it_was_started_with_and_announces_its_start(tmp_path: Path) -> None:
    run = Run(tmp_path, TWO, {"prep": _place(), "train": _place()}, total_usd=1.234567, no_cache=True)
    assert run.start(overrides={"stages.train.retries": 3}, params={"lr": 0.1}, lineage=True) == "succeeded"
    row = run.state.get_run("r1")
    assert (row.pipeline, row.target, row.overrides, row.options, row.estimated_usd, list(row.stages)) == (
        "two", "pipeline.yaml", {"stages.train.retries": 3}, {"no_cache": True, "lineage": True}, 1.2346,
        ["prep", "train"])
    assert run.events[0] == RunEvent(RUN_STARTED, None, run_id="r1", plan=run.plan, params={"lr": 0.1})


def test_lineage_off_is_recorded_as_off(tmp_path: Path) -> None:
    run = Run(tmp_path, TWO, {"prep": _place(), "train": _place()})
    run.start(lineage=False)
    assert run.state.get_run("r1").options == {"no_cache": False, "lineage": False}


def test_the_run_end_is_recorded_and_announced_with_what_it_cost(tmp_path: Path) -> None:
    """The run's cost is what its stages cost; a plan that priced nothing is an estimate of 0."""
    run = Run(tmp_path, TWO, {"prep": _place("aws/us-east-1", hourly=36.0), "train": _place()},
              cloud=FakeBackend(writes_outputs), local=FakeBackend(lambda launch: FakeResult(exit_code=2)))
    before = time.time()
    assert run.start() == "failed"
    after = time.time()
    row = run.state.get_run("r1")
    actual = row.stages["prep"].cost_usd
    assert actual is not None and actual > 0
    assert (row.state, row.runner_pid, row.actual_usd) == ("failed", None, actual)
    assert row.ended_at is not None and before <= row.ended_at <= after
    assert run.events[-1] == RunEvent("run-failed", None, "r1", cost_usd=actual, run_id="r1",
                                      totals={"actual_usd": actual, "estimated_usd": 0.0})


# -- each finished stage ----------------------------------------------------------------------------

NODES = """
name: nodes
stages:
  prep: {run: prep, outputs: [rows]}
  train: {run: train, num_nodes: 2, inputs: {rows: prep.rows}, outputs: [model]}
"""


def test_a_stage_costs_its_hourly_price_for_each_node_for_the_time_it_ran(tmp_path: Path) -> None:
    run = Run(tmp_path, NODES, {"prep": _place(), "train": _place("aws/us-east-1", hourly=12.0, nodes=2)})
    assert run.start() == "succeeded"
    prep, train = run.state.get_stage("r1", "prep"), run.state.get_stage("r1", "train")
    assert (train.hourly_usd, train.num_nodes) == (12.0, 2)
    assert train.duration_s is not None and train.started_at is not None and train.ended_at is not None
    assert 0 < train.duration_s <= train.ended_at - train.started_at
    assert train.cost_usd == 12.0 * 2 * train.duration_s / 3600
    assert prep.cost_usd == 0.0  # this machine costs nothing, however long it ran
    finished = {e.stage: e for e in run.events if e.row is not None}
    assert finished["train"] == RunEvent(StageState.SUCCEEDED, "train", "", cost_usd=train.cost_usd,
                                         duration_s=train.duration_s, run_id="r1", row=train)


def test_a_cache_hit_costs_nothing_and_took_no_time(tmp_path: Path) -> None:
    run = Run(tmp_path, TWO, {"prep": _place("aws/us-east-1", hourly=12.0), "train": _place()})
    assert run.start("r1") == "succeeded"
    assert run.start("r2") == "succeeded"
    prep = run.state.get_stage("r2", "prep")
    assert (prep.state, prep.started_at, prep.duration_s, prep.cost_usd) == ("cached", None, 0.0, 0.0)
    assert prep.message is not None and prep.message.startswith("verified cache hit: ")
    event = next(e for e in run.events if e.run_id == "r2" and e.stage == "prep" and e.row is not None)
    assert event == RunEvent(StageState.CACHED, "prep", prep.message, run_id="r2", row=prep)


CHAIN = """
name: chain
stages:
  head: {run: head, outputs: [rows]}
  zeta: {run: zeta, inputs: {rows: head.rows}, outputs: [mid]}
  alpha: {run: alpha, inputs: {mid: zeta.mid}, outputs: [out]}
  side: {run: side, outputs: [other]}
"""


def test_a_failed_stage_keeps_its_reason_and_everything_below_it_is_skipped(tmp_path: Path) -> None:
    def handler(launch: StageLaunch) -> FakeResult:
        return FakeResult(exit_code=2) if launch.stage == "head" else writes_outputs(launch)

    run = Run(tmp_path, CHAIN, {name: _place() for name in ("head", "zeta", "alpha", "side")},
              local=FakeBackend(handler))
    assert run.start() == "failed"
    state = run.state
    head = state.get_stage("r1", "head")
    log = tmp_path / "home" / "runs" / "r1" / "head" / "attempt-1" / "stage.log"
    assert (head.state, head.message) == ("failed", f"attempt 1: exit code 2 (log: {log})")
    assert 0 < (head.duration_s or 0) <= (head.ended_at or 0) - (head.started_at or 0)
    failed = next(e for e in run.events if e.stage == "head" and e.kind == StageState.FAILED)
    assert head.message is not None and head.duration_s is not None
    assert failed == RunEvent(StageState.FAILED, "head", head.message, cost_usd=0.0, duration_s=head.duration_s,
                              run_id="r1", row=head)
    rows = {name: (row.state, row.message, row.outputs) for name, row in state.get_run("r1").stages.items()}
    assert rows == {"head": ("failed", head.message, {}),
                    "zeta": ("skipped", "an upstream stage failed", {}),
                    "alpha": ("skipped", "an upstream stage failed", {}),
                    "side": ("succeeded", "", rows["side"][2])}
    # shown in pipeline order, and not a stage run for lineage (no row)
    assert [e for e in run.events if e.kind == StageState.SKIPPED] == [
        RunEvent(StageState.SKIPPED, "zeta", "an upstream stage failed", run_id="r1"),
        RunEvent(StageState.SKIPPED, "alpha", "an upstream stage failed", run_id="r1")]
    assert sorted(stage for stage, _ in run.launched()) == ["head", "side"]


SERVICE = """
name: svc
stages:
  train: {run: train, outputs: [model]}
  serve: {run: serve, service: {readiness_probe: /health}}
"""


def test_a_service_stage_keeps_its_endpoint_and_process_groups_in_run_state(tmp_path: Path, group: int) -> None:
    backend = GroupedBackend(writes_outputs, (group,))
    run = Run(tmp_path, SERVICE, {"train": _place(), "serve": _place()}, local=backend)
    assert run.start() == "succeeded"
    serve, train = run.state.get_stage("r1", "serve"), run.state.get_stage("r1", "train")
    assert (serve.state, serve.endpoint, serve.process_groups) == ("succeeded", "http://fake/serve", [group])
    assert serve.message == "serving at http://fake/serve on fake; stop with `skyflow down r1`"
    # a batch stage that ended has nothing left running
    assert (train.state, train.endpoint, train.process_groups) == ("succeeded", None, [])


# -- scheduling ---------------------------------------------------------------------------------------

PAIR = """
name: pair
stages:
  a: {run: a, outputs: [x]}
  b: {run: b, outputs: [y]}
"""


def test_a_stage_waiting_for_a_free_slot_stays_pending_and_one_moving_its_inputs_is_running(tmp_path: Path) -> None:
    run = Run(tmp_path, PAIR, {"a": _place(), "b": _place()}, max_parallel=1)
    seen: list[tuple[str | None, dict[str, str]]] = []
    run.bus.subscribe(lambda e: seen.append((e.stage, run.state.stage_states("r1"))) if e.kind == INPUTS else None)
    assert run.start() == "succeeded"
    assert seen == [("a", {"a": "running", "b": "pending"}), ("b", {"a": "succeeded", "b": "running"})]


def test_as_many_stages_as_max_parallel_run_at_once(tmp_path: Path) -> None:
    count = min(32, (os.cpu_count() or 1) + 4) + 1  # more than a thread pool's default size
    together = threading.Barrier(count)

    def handler(launch: StageLaunch) -> FakeResult:
        together.wait(timeout=60)  # each stage waits until all of them run
        return writes_outputs(launch)

    names = [f"s{i}" for i in range(count)]
    yaml = "name: wide\nstages:\n" + "".join(f"  {n}: {{run: {n}, outputs: [o]}}\n" for n in names)
    run = Run(tmp_path, yaml, {n: _place() for n in names}, local=FakeBackend(handler), max_parallel=count)
    assert run.start() == "succeeded"
    assert sorted(run.launched()) == sorted((n, 1) for n in names)


FORK = """
name: fork
stages:
  a: {run: a, outputs: [x]}
  slow: {run: slow, outputs: [y]}
  c: {run: c, inputs: {x: a.x}, outputs: [z]}
"""


def test_a_stage_starts_once_its_upstream_finished_while_other_stages_still_run(tmp_path: Path) -> None:
    c_started = threading.Event()

    def handler(launch: StageLaunch) -> FakeResult:
        if launch.stage == "c":
            c_started.set()
        if launch.stage == "slow" and not c_started.wait(timeout=60):
            return FakeResult(exit_code=1, reason="c did not start while slow ran")
        return writes_outputs(launch)

    run = Run(tmp_path, FORK, {n: _place() for n in ("a", "slow", "c")}, local=FakeBackend(handler))
    assert run.start() == "succeeded"
    assert run.state.stage_states("r1") == {"a": "succeeded", "slow": "succeeded", "c": "succeeded"}


JOIN = """
name: join
stages:
  a: {run: a, outputs: [x]}
  b: {run: b, outputs: [y]}
  d: {run: d, depends_on: [a, b]}
"""


def test_a_stage_waits_for_every_upstream_stage_not_the_first_one_to_finish(tmp_path: Path) -> None:
    a_succeeded = threading.Event()

    def handler(launch: StageLaunch) -> FakeResult:
        if launch.stage == "b":  # b fails, but only once a is known to have succeeded
            a_succeeded.wait(timeout=60)
            return FakeResult(exit_code=1)
        return writes_outputs(launch)

    run = Run(tmp_path, JOIN, {n: _place() for n in ("a", "b", "d")}, local=FakeBackend(handler), max_parallel=2)
    run.bus.subscribe(lambda e: a_succeeded.set() if (e.kind, e.stage) == (StageState.SUCCEEDED, "a") else None)
    assert run.start() == "failed"
    assert run.state.stage_states("r1") == {"a": "succeeded", "b": "failed", "d": "skipped"}
    assert sorted(run.launched()) == [("a", 1), ("b", 1)]


def test_stages_below_failures_reported_together_are_all_skipped_in_pipeline_order() -> None:
    order = ("x", "y", "x_zeta", "y_beta", "x_alpha")
    upstream = {"x": [], "y": [], "x_zeta": ["x"], "y_beta": ["y"], "x_alpha": ["x_zeta"]}
    downstream = {"x": ["x_zeta"], "y": ["y_beta"], "x_zeta": ["x_alpha"], "y_beta": [], "x_alpha": []}
    schedule = Schedule(order, upstream, downstream, dict.fromkeys(order, "pending"))
    assert [schedule.take_ready(), schedule.take_ready(), schedule.take_ready()] == ["x", "y", None]
    schedule.finished("y", StageState.FAILED)
    schedule.finished("x", StageState.CANCELLED)
    assert schedule.take_blocked() == ["y_beta", "x_zeta", "x_alpha"]
    assert (schedule.take_blocked(), schedule.take_ready()) == ([], None)


# -- a damaged input, a cancel --------------------------------------------------------------------------

HEAL = """
name: heal
stages:
  prep: {run: prep, outputs: [rows]}
  train: {run: train, retries: 1, inputs: {rows: prep.rows}, outputs: [model]}
"""


def test_a_stage_whose_input_was_damaged_waits_as_pending_while_its_producer_runs_again(tmp_path: Path,
                                                                                        group: int) -> None:
    home = tmp_path / "home"

    def handler(launch: StageLaunch) -> FakeResult:
        if (launch.stage, launch.attempt) == ("train", 1):  # the store damages prep's output meanwhile
            damage_blobs(home / "artifacts")
            return FakeResult(exit_code=1)
        return writes_outputs(launch)

    run = Run(tmp_path, HEAL, {"prep": _place(), "train": _place()}, local=GroupedBackend(handler, (group,)))
    waiting: list[tuple[str, str | None, float | None, list[int]]] = []

    def on_retry(event: RunEvent) -> None:
        if event.kind == RETRYING and event.stage == "train" and event.message.endswith("runs again first"):
            row = run.state.get_stage("r1", "train")
            waiting.append((row.state, row.message, row.started_at, row.process_groups))

    run.bus.subscribe(on_retry)
    assert run.start() == "succeeded"
    retries = [(e.stage, e.message, e.run_id) for e in run.events if e.kind == RETRYING]
    assert [stage for stage, _, _ in retries] == ["train", "prep", "train"]
    damaged = retries[2][1]
    assert re.fullmatch(r"input 'rows' \(prep\.rows, sha256:[0-9a-f]{64}\) was damaged in the store; "
                        r"'prep' runs again first", damaged), damaged
    assert retries[2][2] == "r1"
    # while it waits, run state shows it pending with the reason, not started, and with nothing running
    assert waiting == [("pending", damaged, None, [])]
    assert run.launched() == [("prep", 1), ("train", 1), ("prep", 2), ("train", 2)]
    assert run.state.stage_states("r1") == {"prep": "succeeded", "train": "succeeded"}


def test_a_cancel_ends_the_running_stage_and_the_stages_left_as_cancelled(tmp_path: Path) -> None:
    loops: list[RunLoop] = []

    def handler(launch: StageLaunch) -> FakeResult:
        loops[0].cancel()
        return FakeResult(block=True)

    run = Run(tmp_path, TWO, {"prep": _place(), "train": _place()}, local=FakeBackend(handler))
    loops.append(run.loop())
    assert loops[0].start("r1", "pipeline.yaml", {}, {}, lineage=False) == "cancelled"
    rows = {name: (row.state, row.message) for name, row in run.state.get_run("r1").stages.items()}
    assert rows == {"prep": ("cancelled", "cancelled"), "train": ("cancelled", "run cancelled")}
    assert run.events[-1].kind == "run-cancelled"


# -- resume ------------------------------------------------------------------------------------------------


class WriteAheadFake(FakeBackend):
    """A backend with a handle before its launch returns; the launch reads what run state holds then."""

    def __init__(self, state: Callable[[], RunStore]) -> None:
        super().__init__(self._seen)
        self.state, self.at_launch = state, dict[str, str | None]()

    def planned_remote(self, launch: StageLaunch) -> dict[str, object]:
        return {"backend": "fake", "name": f"{launch.stage}-{launch.attempt}"}

    def _seen(self, launch: StageLaunch) -> FakeResult:
        self.at_launch[launch.stage] = self.state().get_stage("r1", launch.stage).remote_handle
        return writes_outputs(launch)


def test_a_write_ahead_handle_is_in_run_state_before_the_launch_and_the_launchs_own_replaces_it(
        tmp_path: Path) -> None:
    """A runner that dies while a slow launch provisions (SkyPilot) leaves a handle `abandon` can use."""
    run = Run(tmp_path, TWO, {"prep": _place(), "train": _place("aws/us-east-1")})
    cloud = WriteAheadFake(lambda: run.state)
    run.cloud = cloud
    assert run.start() == "succeeded"
    assert cloud.at_launch == {"train": '{"backend": "fake", "name": "train-1"}'}
    assert run.state.get_stage("r1", "train").remote_handle == '{"fake": "r1/train/1"}'  # the launch's own


def _failed_run(tmp_path: Path, placements: dict[str, Placement]) -> Run:
    """A run of TWO whose train failed; prep's output is committed."""
    failing = Run(tmp_path, TWO, placements,
                  local=FakeBackend(lambda launch: FakeResult(exit_code=3) if launch.stage == "train"
                                    else writes_outputs(launch)),
                  cloud=FakeBackend(lambda launch: FakeResult(exit_code=3)))
    assert failing.start() == "failed"
    return Run(tmp_path, TWO, placements)


def test_a_resume_redoes_unfinished_stages_from_a_clean_slate(tmp_path: Path, group: int) -> None:
    run = _failed_run(tmp_path, {"prep": _place(), "train": _place()})
    state = run.state
    prep_before = state.get_stage("r1", "prep")
    state.set_stage("r1", "prep", heals=1)
    # as if the runner died during train's third attempt, before it knew where train runs
    state.set_stage("r1", "train", state=StageState.RUNNING, attempts=3, infra=None, process_groups=[group],
                    remote_handle=None, message="attempt 3 running", ended_at=time.time())
    log_path = state.get_stage("r1", "train").log_path
    snapshot: list[object] = []

    def on_start(event: RunEvent) -> None:
        if event.kind == RUN_STARTED:
            row = state.get_run("r1")
            snapshot.append((row.state, row.runner_pid, row.ended_at))
            snapshot.append({n: (s.state, s.attempts, s.message, s.process_groups, s.started_at, s.ended_at, s.heals)
                             for n, s in row.stages.items() if n == "train"})
            snapshot.append({n: s.heals for n, s in row.stages.items()})

    run.bus.subscribe(on_start)
    assert run.loop().resume("r1", {"lr": 0.2}) == "succeeded"
    assert snapshot == [("running", os.getpid(), None),
                        {"train": ("pending", 0, None, [], None, None, 0)},
                        {"prep": 0, "train": 0}]
    assert run.events[0] == RunEvent(RUN_STARTED, None, run_id="r1", plan=run.plan, params={"lr": 0.2})
    # what the dead runner left is stopped where it ran: this machine
    # (with the attempt's log path, from which the local backend knows its token even when nothing else was recorded)
    assert log_path and (run.local.abandoned, run.cloud.abandoned) == ([Leftover((group,), None, log_path)], [])
    # prep's output is still there: kept as it was, not run again nor taken from the cache
    prep = state.get_stage("r1", "prep")
    assert (prep.state, prep.outputs, prep.ended_at) == ("succeeded", prep_before.outputs, prep_before.ended_at)
    assert run.launched() == [("train", 1)]


def test_a_resume_stops_a_dead_runners_remote_attempt_through_its_backend(tmp_path: Path) -> None:
    run = _failed_run(tmp_path, {"prep": _place(), "train": _place("aws/us-east-1")})
    run.state.set_stage("r1", "train", state=StageState.RUNNING, remote_handle='{"job": "train-3"}')
    log_path = run.state.get_stage("r1", "train").log_path
    assert run.loop().resume("r1", {}) == "succeeded"
    assert (run.local.abandoned, run.cloud.abandoned) == ([], [Leftover((), {"job": "train-3"}, log_path,
                                                                           "aws/us-east-1")])
    assert run.launched(run.cloud) == [("train", 1)]
