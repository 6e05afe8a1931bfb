"""The run loop and one stage's work on the FakeBackend: no processes, every launch inspected.

What the plan chose reaches the backend whole (the any_of branch's job_recovery, accelerators, disk,
spot), the plan stored in run state is the typed plan a resume runs from, and lineage hears each
finished stage through the event bus.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.planner import Placement, Plan
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import INPUTS, RUN_STARTED, EventBus, RunEvent
from skyflow.runner.loop import RunLoop
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState

PIPELINE = """
name: fake
stages:
  prep:
    run: prep
    outputs: [rows]
  train:
    run: train
    inputs: {rows: prep.rows}
    outputs: [model]
    resources:
      any_of:
        - {accelerators: "H100:8", use_spot: true, disk_size: 800,
           job_recovery: {strategy: EAGER_NEXT_REGION, max_restarts_on_errors: 1}}
        - {accelerators: "L4:1"}
"""


def _placement(infra: str, *, accelerators: dict[str, float] | None = None, spot: bool = False,
               alternative: int = 0, disk: int | None = None) -> Placement:
    cloud = infra.split("/")[0]
    return Placement(infra=infra, cloud=cloud, region=infra.partition("/")[2] or None, zone=None,
                     instance_type="p5.48xlarge" if accelerators else "local", accelerators=accelerators or {},
                     use_spot=spot, num_nodes=1, hourly_usd=12.0 if accelerators else 0.0, hours=2.0,
                     alternative=alternative, disk_size_gb=disk)


def _plan() -> Plan:
    stages = {"prep": _placement("local"),
              "train": _placement("aws/us-east-1", accelerators={"H100": 8}, spot=True, disk=800)}
    return Plan(pipeline="fake", objective="cost", stages=stages, egress=(), total_usd=24.0, total_hours=4.0)


def _writes_outputs(fail_first: set[str], fail_always: frozenset[str] = frozenset()) -> FakeBackend:
    failed: set[str] = set()

    def handler(launch: StageLaunch) -> FakeResult:
        if launch.stage in fail_always:
            return FakeResult(exit_code=2)
        if launch.stage in fail_first and launch.stage not in failed:
            failed.add(launch.stage)
            return FakeResult(exit_code=1, lines=["CUDA error: out of memory"])
        for name, path in launch.outputs.items():
            (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
        return FakeResult(lines=[f"{launch.stage} done"])

    return FakeBackend(handler)


def _loop(tmp_path: Path, backend: FakeBackend, plan: Plan, events: list[RunEvent]) -> RunLoop:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    home = tmp_path / "home"
    pool = BackendPool(BackendContext(), {"local": backend, "skypilot": backend})
    ctx = RunContext(pipeline=pipeline, plan=plan, state=RunStore(home / "state.db"), backends=pool,
                     options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)), emit=EventBus([events.append]),
                     home=home, secrets={})
    return RunLoop(ctx)


def test_the_chosen_alternative_reaches_the_launch_whole(tmp_path: Path) -> None:
    backend = _writes_outputs(fail_first={"train"})
    events: list[RunEvent] = []
    loop = _loop(tmp_path, backend, _plan(), events)
    assert loop.start("r1", "pipeline.yaml", {}, {}, lineage=False) == "succeeded"
    train = [launch for launch in backend.launches if launch.stage == "train"]
    # job_recovery of the any_of branch granted the restart; the top level has none
    assert len(train) == 2 and train[1].attempt == 2
    spec = train[0].spec
    assert spec.resources.job_recovery is not None and spec.resources.job_recovery.max_restarts_on_errors == 1
    assert [str(a) for a in spec.resources.accelerators] == ["H100:8"] and spec.resources.disk_size == 800
    assert train[0].env["SKYPILOT_NUM_GPUS_PER_NODE"] == "8" and train[0].gpu_count == 8
    assert train[0].placement.use_spot and train[0].placement.infra == "aws/us-east-1"
    assert train[0].store_uri == str(tmp_path / "home" / "artifacts")
    rows = train[0].input_refs["rows"]
    assert rows.store_uri == train[0].store_uri and rows.digest.startswith("sha256:")


def test_the_state_db_keeps_the_typed_plan_and_resume_runs_from_it(tmp_path: Path) -> None:
    backend = _writes_outputs(fail_first=set())
    events: list[RunEvent] = []
    loop = _loop(tmp_path, _writes_outputs(set(), frozenset({"train"})), _plan(), events)
    assert loop.start("r1", "pipeline.yaml", {}, {}, lineage=False) == "failed"
    stored = RunStore(tmp_path / "home" / "state.db").get_run("r1").plan
    assert stored is not None
    plan = Plan.from_json(stored)
    assert plan.stages["train"].alternative == 0 and plan.stages["train"].disk_size_gb == 800
    # a resume only has what the state DB kept
    resumed = _loop(tmp_path, backend, plan, events)
    assert resumed.resume("r1", {}) == "succeeded"
    assert [launch.stage for launch in backend.launches] == ["train"]  # prep's committed output was reused
    assert backend.launches[0].spec.resources.job_recovery is not None


def test_events_tell_the_whole_run_in_order(tmp_path: Path) -> None:
    events: list[RunEvent] = []
    loop = _loop(tmp_path, _writes_outputs(fail_first=set()), _plan(), events)
    loop.start("r1", "pipeline.yaml", {}, {"lr": 0.1}, lineage=False)
    kinds = [(e.kind, e.stage) for e in events if e.kind != "log"]
    assert kinds[0] == (RUN_STARTED, None) and events[0].plan is not None and events[0].params == {"lr": 0.1}
    assert kinds[-1] == ("run-succeeded", None) and events[-1].totals["estimated_usd"] == pytest.approx(24.0)
    finished = [e for e in events if e.row is not None]
    assert [(e.stage, e.row.state) for e in finished if e.row] == [("prep", "succeeded"), ("train", "succeeded")]
    inputs = next(e for e in events if e.kind == INPUTS and e.stage == "train")
    assert [a.name for a in inputs.inputs] == ["prep.rows"] and inputs.message.startswith("sha256:")


def test_a_dead_runners_attempt_is_abandoned_through_the_backend(tmp_path: Path) -> None:
    events: list[RunEvent] = []
    loop = _loop(tmp_path, _writes_outputs(set(), frozenset({"train"})), _plan(), events)
    loop.start("r1", "pipeline.yaml", {}, {}, lineage=False)
    state = RunStore(tmp_path / "home" / "state.db")
    # as if the runner died with train running: its row still names the attempt's remote handle
    state.set_stage("r1", "train", state=StageState.RUNNING, remote_handle='{"fake": "r1/train/1"}')
    after = _writes_outputs(fail_first=set())
    _loop(tmp_path, after, _plan(), events).resume("r1", {})
    assert [left.remote for left in after.abandoned] == [{"fake": "r1/train/1"}]


def test_a_pipeline_input_is_imported_once_per_store_as_the_plan_priced_it(tmp_path: Path) -> None:
    """Three stages at one location read the same input: one import, shared (not one per stage)."""
    import sqlite3

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "rows.txt").write_text("a\nb\n")
    (tmp_path / "pipeline.yaml").write_text(
        "name: fanout\ninputs: {raw: {uri: raw}}\nstages:\n"
        # each stage its own work: a stage ending before another starts must not make it a cache hit
        + "".join(f"  s{i}: {{run: x{i}, inputs: {{data: raw}}, outputs: [o]}}\n" for i in range(3)))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    home, backend = tmp_path / "home", _writes_outputs(fail_first=set())
    plan = Plan(pipeline="fanout", objective="cost", stages={f"s{i}": _placement("local") for i in range(3)},
                egress=(), total_usd=0.0, total_hours=0.0)
    ctx = RunContext(pipeline=pipeline, plan=plan, state=RunStore(home / "state.db"),
                     backends=BackendPool(BackendContext(), {"local": backend}),
                     options=RunOptions(env=dict(os.environ), max_parallel=3), emit=EventBus(), home=home, secrets={})
    assert RunLoop(ctx).start("r1", "pipeline.yaml", {}, {}, lineage=False) == "succeeded"
    with sqlite3.connect(home / "state.db") as db:
        imports = db.execute("SELECT stage FROM transfers WHERE artifact LIKE 'import raw=%'").fetchall()
    assert len(imports) == 1
    digests = {launch.input_refs["data"].digest for launch in backend.launches}
    assert len(digests) == 1 and len(backend.launches) == 3


def _run_in_thread(loop: RunLoop) -> tuple[list[str], threading.Thread]:
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(loop.start("r1", "pipeline.yaml", {}, {}, lineage=False)),
                              daemon=True)
    thread.start()
    return ended, thread


def test_a_cancel_that_comes_while_a_stage_launches_still_stops_it(tmp_path: Path) -> None:
    """The cancel finds no handle to stop (the launch has not returned it yet); the stage, once launched,
    sees the cancel itself instead of running to its end."""
    events: list[RunEvent] = []
    loops: list[RunLoop] = []

    def handler(launch: StageLaunch) -> FakeResult:
        loops[0].cancel()  # as Ctrl-C landing between the process start and the handle's registration
        return FakeResult(block=True)  # runs until cancelled

    loops.append(_loop(tmp_path, FakeBackend(handler), _plan(), events))
    ended, thread = _run_in_thread(loops[0])
    thread.join(60)
    assert ended == ["cancelled"], "the launched stage never heard of the cancel"
    states = RunStore(tmp_path / "home" / "state.db").stage_states("r1")
    assert states == {"prep": StageState.CANCELLED, "train": StageState.CANCELLED}


def test_ctrl_c_during_the_loop_cancels_the_run_and_gives_the_caller_its_ctrl_c_back(tmp_path: Path) -> None:
    events: list[RunEvent] = []

    def handler(launch: StageLaunch) -> FakeResult:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while prep runs
        return FakeResult(block=True)

    loop = _loop(tmp_path, FakeBackend(handler), _plan(), events)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with it ignored
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        assert loop.start("r1", "pipeline.yaml", {}, {}, lineage=False) == "cancelled"  # no KeyboardInterrupt
        assert RunStore(tmp_path / "home" / "state.db").stage_states("r1") == {
            "prep": StageState.CANCELLED, "train": StageState.CANCELLED}
        # a Python program that ran a pipeline keeps its own Ctrl-C and SIGTERM afterwards
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_sigterm_the_kernel_hands_to_a_stage_thread_still_cancels_the_run(tmp_path: Path) -> None:
    """A process's signal goes to any thread that does not block it (the main thread blocks them all for a
    moment whenever it starts a process), and Python runs the handler in the main thread only: a main
    thread asleep in a wait with no timeout never ran it, and `skyflow cancel` waited its 30 s for nothing."""
    events: list[RunEvent] = []
    watchdog_fired: list[bool] = []

    def handler(launch: StageLaunch) -> FakeResult:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # this stage thread, not the main one
        return FakeResult(block=True)  # runs until cancelled

    loop = _loop(tmp_path, FakeBackend(handler), _plan(), events)
    stop = threading.Event()

    def watchdog() -> None:  # fails the test instead of leaving the run blocked for ever
        if not stop.wait(60):
            watchdog_fired.append(True)
            loop.cancel()

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        assert loop.start("r1", "pipeline.yaml", {}, {}, lineage=False) == "cancelled"
    finally:
        stop.set()
    assert not watchdog_fired, "the SIGTERM was never acted on"
    assert RunStore(tmp_path / "home" / "state.db").stage_states("r1") == {
        "prep": StageState.CANCELLED, "train": StageState.CANCELLED}


def test_sigterm_during_the_loop_cancels_the_run_as_skyflow_cancel_does(tmp_path: Path) -> None:
    events: list[RunEvent] = []

    def handler(launch: StageLaunch) -> FakeResult:
        os.kill(os.getpid(), signal.SIGTERM)
        return FakeResult(block=True)

    loop = _loop(tmp_path, FakeBackend(handler), _plan(), events)
    before = signal.getsignal(signal.SIGTERM)
    assert loop.start("r1", "pipeline.yaml", {}, {}, lineage=False) == "cancelled"
    assert signal.getsignal(signal.SIGTERM) == before
