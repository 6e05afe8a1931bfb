"""Session: plan, run, resume, cancel and stop pipelines on this machine, for the CLI and Python alike.

A Session holds what the edge knows (SKYFLOW_HOME, the environment, the user's config) and wires the
pure parts together: the planner gets a Policy built from discovery, the run loop a typed Plan with
each stage's store attached, backends, run state, and an event bus that the progress view and
lineage subscribe to.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyflow.catalog import EgressModel, load_egress
from skyflow.config import SkyflowConfig, load_config
from skyflow.errors import LineageError, PlanningError, RunError
from skyflow.home import skyflow_home
from skyflow.matching import close_matches
from skyflow.planner import Plan, Policy, forced_plan, plan_pipeline
from skyflow.session.discovery import build_policy, load_prices
from skyflow.session.planning_options import PlanningOptions
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import load_pipeline
from skyflow.states import RunState, StageState

# What runs, resumes and looks at runs needs is imported where it is used: `skyflow plan` builds a
# Session too, and the runner's modules (lineage, artifact transfer, backends) are a tenth of its time.
if TYPE_CHECKING:
    from skyflow.backends.base import Backend
    from skyflow.backends.registry import BackendPool
    from skyflow.runner.context import RunOptions
    from skyflow.runner.events import RunEvent
    from skyflow.runner.lineage_io import LineageWriter
    from skyflow.runner.loop import RunLoop
    from skyflow.runner.state import RunRow, RunStore, StageRow

__all__ = ["DryRunStage", "RunResult", "Session", "fetch_output"]

# How long a run that may leave lineage to the background drain waits before loading MLflow itself.
LINEAGE_DEFER_OPEN_S = 5.0


def _warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its id, final state, where lineage went, and run state's record of it."""

    run_id: str
    state: str
    lineage: str | None
    run: RunRow

    @property
    def ok(self) -> bool:
        return self.state == RunState.SUCCEEDED

    def open(self, stage: str, output: str, dest: Path | None = None) -> Path:
        """A local copy of one of the run's outputs (verified against its digest), under ``dest``."""
        return fetch_output(self.run, stage, output, dest)


def require_reachable_stores(pipeline: ResolvedPipeline, plan: Plan) -> None:
    """Before anything starts: every stage placed on remote nodes has an object store they can reach."""
    from skyflow.backends.registry import backend_kind
    from skyflow.backends.remote_stage import is_remote_uri, missing_store_message
    from skyflow.runner.launches import preview_launch

    for name in pipeline.order:
        placement = plan.placement(name)
        kind = backend_kind(placement.infra)
        remote = kind in ("kubernetes", "ray", "skypilot")
        if remote and not placement.cached and not is_remote_uri(placement.store_uri):
            # a configuration problem found before anything ran: exit 2, like any other plan that cannot run
            raise PlanningError(missing_store_message(preview_launch(pipeline, name, placement), kind))


def fetch_output(run: RunRow, stage: str, output: str, dest: Path | None = None) -> Path:
    """A verified local copy of ``stage``'s ``output`` in ``run`` at ``dest`` (default: a new temporary folder)."""
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    row = run.stages.get(stage)
    if row is None:
        matches = close_matches(stage, list(run.stages))
        raise RunError(f"run {run.run_id!r} has no stage {stage!r}" +
                       (f"; did you mean {', '.join(matches)}?" if matches else f"; stages: {', '.join(run.stages)}"))
    record = row.outputs.get(output)
    if record is None:
        have = ", ".join(row.outputs) or "none (it is " + row.state + ")"
        raise RunError(f"stage {stage!r} of run {run.run_id!r} has no output {output!r}; outputs: {have}")
    target = dest or Path(tempfile.mkdtemp(prefix=f"skyflow-{stage}-")) / output
    return fetch_artifact(ArtifactRef.open(record), target)


@dataclass(frozen=True)
class DryRunStage:
    """What one stage's backend would launch: the backend's own rendering (a manifest, a task)."""

    stage: str
    infra: str
    backend: str
    text: str


def _remote_only(store_uri: str) -> str | None:
    return store_uri if "://" in store_uri and not store_uri.startswith("file://") else None


@dataclass
class Session:
    """The edge: SKYFLOW_HOME, the environment and the user's config, and everything that runs from them."""

    home: Path = field(default_factory=skyflow_home)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    warn: Callable[[str], None] = _warn_to_stderr
    _config: SkyflowConfig | None = None
    # extra["kubernetes_client_factory"] and the like, for backends opened by this session
    backend_extra: dict[str, Any] = field(default_factory=dict)
    # Backends by kind (local, ssh, kubernetes, skypilot) used instead of opening them (a FakeBackend in tests).
    backends: dict[str, Backend] = field(default_factory=dict)
    # The egress prices of this session's last plan; a run prices the data it really moves with them.
    _egress: EgressModel | None = field(default=None, repr=False)
    # A run that ends before MLflow has loaded (a sqlite or file store) may leave its lineage records,
    # spooled on disk, to a background process instead of waiting for MLflow (the CLI's default).
    lineage_in_background: bool = False

    @property
    def config(self) -> SkyflowConfig:
        if self._config is None:
            self._config = load_config(self.home / "config.yaml")
        return self._config

    @functools.cached_property
    def state(self) -> RunStore:
        """Run state, opened once per session (schema and migration checked once, one connection a thread)."""
        from skyflow.runner.state import RunStore

        return RunStore(self.home / "state.db")

    # -- pipelines and plans --------------------------------------------------------------------
    def load(self, target: str, overrides: Mapping[str, Any] | None = None) -> ResolvedPipeline:
        return load_pipeline(target, dict(overrides or {}))

    def policy(self, pipeline: ResolvedPipeline, options: PlanningOptions, *, no_cache: bool = False) -> Policy:
        return build_policy(pipeline, options, self.config, self.home, self.environ, no_cache=no_cache)

    def plan(self, pipeline: ResolvedPipeline, options: PlanningOptions | None = None, *,
             no_cache: bool = False, started: float | None = None,
             progress: Callable[[str], None] | None = None) -> Plan:
        """The cheapest (or fastest) plan over what this machine and config offer; the time limit counts
        from ``started`` (``time.monotonic()`` when the command began; default now)."""
        options = options or PlanningOptions()
        catalog, egress = load_prices(options)
        self._egress = egress
        return plan_pipeline(pipeline, catalog, egress, self.policy(pipeline, options, no_cache=no_cache),
                             started=started, progress=progress)

    def with_stores(self, pipeline: ResolvedPipeline, plan: Plan) -> Plan:
        """The plan with each stage's artifact store attached (what the run and its nodes use)."""
        from skyflow.runner.context import store_of_placement

        return plan.with_stores(lambda placement: store_of_placement(pipeline, placement, self.home)[0])

    def new_run_id(self, pipeline: ResolvedPipeline, requested: str | None = None) -> str:
        """The run's id, checked before anything is planned: well-formed and not taken."""
        from skyflow.runner.loop import check_run_id, new_run_id

        run_id = check_run_id(requested or new_run_id(pipeline.name))
        if (self.home / "state.db").is_file() and self.state.has_run(run_id):
            raise RunError(f"a run named {run_id!r} exists already; pick another --run-id or "
                           f"`skyflow resume {run_id}`")
        return run_id

    # -- runs -----------------------------------------------------------------------------------
    def run(self, pipeline: ResolvedPipeline, plan: Plan, *, run_id: str | None = None, target: str | None = None,
            overrides: Mapping[str, Any] | None = None, options: RunOptions | None = None, lineage: bool = True,
            tracking_uri: str | None = None, on_event: Callable[[RunEvent], None] | None = None) -> RunResult:
        """Run every stage of ``plan`` to the end; returns how the run ended (failures are a state, not an error)."""
        from skyflow.runner.context import RunOptions

        options = options or RunOptions(env=dict(self.environ))
        run_id = self.new_run_id(pipeline, run_id or options.run_id)
        loop, writer, where = self._loop(pipeline, plan, options, lineage, tracking_uri, on_event)
        try:
            state = loop.start(run_id, target or pipeline.path, dict(overrides or {}), pipeline.spec.params, lineage)
        finally:
            writer.close()
        return RunResult(run_id, state, where, self.state.get_run(run_id))

    def resume(self, run_id: str, *, max_parallel: int | None = None, tracking_uri: str | None = None,
               on_event: Callable[[RunEvent], None] | None = None) -> RunResult:
        """Rerun the failed and never-run stages of a run, reusing committed outputs.

        Only one process may resume a run: the runner recorded in run state must be dead (checked by
        pid and start time, so a reused pid is not taken for it), and this process then takes the
        run over with one conditional update; of two resumes started together, one refuses.
        """
        from skyflow.runner.context import RunOptions

        run = self.state.get_run(run_id)
        if run.runner_pid != os.getpid() and self.runner_alive(run_id):
            what = "still running" if run.state == RunState.RUNNING else "being resumed by another process"
            raise RunError(f"run {run_id!r} is {what} (pid {run.runner_pid}); wait for it, or "
                           f"`skyflow cancel {run_id}` first")
        if not self.state.claim_runner(run_id, run.runner_pid, run.runner_start):
            pid = self.state.get_run(run_id).runner_pid
            raise RunError(f"run {run_id!r} is being resumed by another process (pid {pid}); wait for it, or "
                           f"`skyflow cancel {run_id}` first")
        pipeline = self.load(run.target, run.overrides)
        if pipeline.digest() != run.pipeline_digest:
            self.warn(f"{run.target} changed since run {run_id} started; resuming with the current version")
        options = RunOptions(run_id=run_id, max_parallel=max_parallel, no_cache=bool(run.options.get("no_cache")),
                             retry_base_delay_s=float(self.environ.get("SKYFLOW_RETRY_BASE_S", "1")),
                             env=dict(self.environ))
        plan = Plan.from_json(run.plan) if run.plan else Plan(pipeline.name, "cost", {}, (), 0.0, 0.0)
        lineage = bool(run.options.get("lineage", True))
        loop, writer, where = self._loop(pipeline, plan, options, lineage, tracking_uri, on_event)
        try:
            state = loop.resume(run_id, pipeline.spec.params)
        finally:
            writer.close()
        return RunResult(run_id, state, where, self.state.get_run(run_id))

    def _loop(self, pipeline: ResolvedPipeline, plan: Plan, options: RunOptions, lineage: bool,
              tracking_uri: str | None, on_event: Callable[[RunEvent], None] | None
              ) -> tuple[RunLoop, LineageWriter, str | None]:
        """The run loop for ``plan`` (stores attached and checked reachable first), with lineage subscribed."""
        from skyflow.backends.registry import BackendContext, BackendPool
        from skyflow.runner.context import RunContext
        from skyflow.runner.environment import require_envs, secret_values
        from skyflow.runner.events import LOG, EventBus, RunEvent
        from skyflow.runner.lineage_io import LineageSubscriber
        from skyflow.runner.loop import RunLoop

        plan = self.with_stores(pipeline, plan)
        require_reachable_stores(pipeline, plan)
        require_envs(pipeline, {**options.env, **options.extra_env})
        names = list(pipeline.spec.secrets) + [n for s in pipeline.stages.values() for n in s.secrets]
        secrets = secret_values(names, options.env)
        bus = EventBus([on_event] if on_event else [])
        writer, where = self._lineage(lineage, tracking_uri, list(secrets.values()))
        state = self.state
        subscriber = LineageSubscriber(writer, pipeline, state=state, home=self.home) if writer.enabled else None
        if subscriber is not None:
            bus.subscribe(subscriber)
        context = BackendContext(config=self.config, on_line=lambda stage, line: bus(RunEvent(LOG, stage, line)),
                                 max_parallel=options.max_parallel, extra=dict(self.backend_extra))
        ctx = RunContext(pipeline=pipeline, plan=plan, state=state, backends=BackendPool(context, self.backends),
                         options=options, emit=bus, home=self.home, secrets=secrets, stage_runs=subscriber,
                         egress=self._egress or load_egress(None, None))
        return RunLoop(ctx), writer, where

    def _lineage(self, enabled: bool, tracking_uri: str | None, secrets: list[str]) -> tuple[LineageWriter, str | None]:
        """A lineage writer and a description of where lineage goes (None when off)."""
        from skyflow.runner.lineage_io import LineageWriter

        if not enabled:
            return LineageWriter(warn=self.warn), None
        from skyflow.lineage.recorder import describe_tracking, open_recorder, resolve_tracking_uri

        try:
            # A run that may hand its records off loads MLflow only once it has lasted a while (or a
            # stage needs the store): a short run then never loads it in this process.
            defer = LINEAGE_DEFER_OPEN_S if self.lineage_in_background else 0.0
            recorder = open_recorder(tracking_uri, self.home, secrets, defer_open_s=defer)
        except LineageError as exc:
            self.warn(f"lineage off: {exc}")
            return LineageWriter(warn=self.warn), None
        where = describe_tracking(resolve_tracking_uri(tracking_uri, self.home))
        return LineageWriter(recorder=recorder, warn=self.warn, background_ok=self.lineage_in_background), where

    # -- dry runs -------------------------------------------------------------------------------
    def dry_run(self, pipeline: ResolvedPipeline, options: PlanningOptions | None = None) -> tuple[Plan, bool,
                                                                                                     list[DryRunStage]]:
        """What each stage's backend would launch, and the plan it comes from (True: forced by --infra,
        unpriced). Every stage is shown as launched, so the plan ignores cached copies."""
        from skyflow.backends.base import RenderingBackend
        from skyflow.backends.registry import backend_kind
        from skyflow.runner.context import store_of_placement
        from skyflow.runner.launches import preview_launch

        options = options or PlanningOptions()
        forced = bool(options.infra) and backend_kind(str(options.infra)) in ("kubernetes", "ray", "ssh")
        # A cluster or pool forced by --infra needs no configuration to be reviewed.
        plan = forced_plan(pipeline, str(options.infra)) if forced else self.plan(pipeline, options, no_cache=True)
        pool = self._backend_pool()
        # Only object stores are shown: a path on this machine means nothing to the launch reviewed.
        shown = plan.with_stores(lambda p: _remote_only(store_of_placement(pipeline, p, self.home)[0]))
        stages = []
        for name in pipeline.order:
            placement = shown.placement(name)
            launch = preview_launch(pipeline, name, placement)
            backend = pool.for_infra(placement.infra)
            text = (backend.render(launch) if isinstance(backend, RenderingBackend)
                    else f"# setup\n{launch.setup or ''}\n# run\n{launch.run}\n")
            stages.append(DryRunStage(name, placement.infra, backend.name, text))
        return plan, forced, stages

    # -- looking at and stopping runs -----------------------------------------------------------
    def get_run(self, run_id: str | None = None) -> RunRow:
        """A run by id, else the newest."""
        from skyflow.runner.run_reads import find_run

        return find_run(self.state, run_id)

    def runs(self, limit: int = 20, pipeline: str | None = None) -> list[RunRow]:
        return self.state.list_runs(limit=limit, pipeline=pipeline)

    def runner_alive(self, run_id: str) -> bool:
        """Whether the run's runner is alive (not a pid an unrelated process reused since)."""
        from skyflow.runner.run_reads import runner_alive

        return runner_alive(self.state.get_run(run_id))

    def cancel(self, run_id: str, timeout_s: float = 30.0) -> str:
        """Ask the run's runner to stop (SIGTERM); if none is alive, or it has not stopped within
        ``timeout_s`` (it is then killed), stop the run's stages and mark it cancelled."""
        from skyflow.processes import KILL_GRACE_S, STAGE_TOKEN_VARIABLE, end_attempt, kill_process

        state = self.state
        run = state.get_run(run_id)
        if run.state != RunState.RUNNING:
            raise RunError(f"run {run_id!r} is {run.state}; only a running run can be cancelled")
        if self.runner_alive(run_id) and run.runner_pid:
            os.kill(run.runner_pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if (now := state.get_run(run_id).state) != RunState.RUNNING:
                    return now
                time.sleep(0.1)
            # Not stopped (stopped with SIGSTOP, wedged): killed before its stages are ended here. Left
            # alive, it would record them failed by the signal and start the stages waiting for a slot.
            if not kill_process(run.runner_pid, run.runner_start):
                raise RunError(f"the runner of run {run_id!r} (pid {run.runner_pid}) did not end on SIGTERM, nor "
                               f"within {KILL_GRACE_S:g} s of SIGKILL (stuck in the kernel?); run state is as it "
                               f"was: try `skyflow cancel {run_id}` again")
            if (now := state.get_run(run_id).state) != RunState.RUNNING:  # it ended the run as the kill came
                return now
        pool: BackendPool | None = None
        for name, row in state.get_run(run_id).stages.items():  # read now: only groups that are still its own
            if row.state in (StageState.RUNNING, StageState.PENDING):
                handle = json.loads(row.remote_handle) if row.remote_handle else {}
                # children that left the groups too, and a local attempt its runner never recorded
                end_attempt(row.process_groups, handle.get(STAGE_TOKEN_VARIABLE),
                            row.log_path if row.state == StageState.RUNNING else None)
                message = "run cancelled"
                # a remote attempt is looked for even without a handle: its runner may have died between
                # starting it and recording it
                if row.state == StageState.RUNNING and (row.infra or "local") != "local":
                    pool = pool or self._backend_pool()
                    message = _abandon_remote(pool, row, handle)
                state.finish_stage(run_id, name, StageState.CANCELLED, {}, message=message)
        state.set_run(run_id, state=RunState.CANCELLED, ended_at=time.time(), runner_pid=None)
        return RunState.CANCELLED

    def down(self, run_id: str, backends: BackendPool | None = None) -> list[str]:
        """Stop the services a run left serving (local replicas, a Kubernetes Deployment, `sky serve`);
        returns the stages stopped."""
        from skyflow.backends.base import Leftover, ServiceBackend

        state = self.state
        run = state.get_run(run_id)
        pool = backends or self._backend_pool()
        stopped = []
        for name, row in run.stages.items():
            if not row.endpoint or not (row.remote_handle or row.process_groups):
                continue
            backend = pool.for_infra(row.infra or "local")
            if not isinstance(backend, ServiceBackend):
                raise RunError(f"stage {name!r} serves on {row.infra}, whose backend cannot stop services")
            remote = json.loads(row.remote_handle) if row.remote_handle else None
            backend.stop_service(Leftover(tuple(row.process_groups), remote))
            state.set_stage(run_id, name, remote_handle=None, process_groups=[],
                            message=f"stopped (was serving at {row.endpoint})")
            stopped.append(name)
        return stopped

    def _backend_pool(self) -> BackendPool:
        """The backends of this session's config, for looking at or stopping what a run left."""
        from skyflow.backends.registry import BackendContext, BackendPool

        return BackendPool(BackendContext(config=self.config, extra=dict(self.backend_extra)), self.backends)

    def log_path(self, run_id: str, stage: str, *, attempt: int | None = None, wait: bool = False) -> Path:
        """The stage's log (its latest attempt, or ``attempt``); with ``wait``, wait for a pending stage to start."""
        from skyflow.runner.run_reads import stage_log_path

        return stage_log_path(self.state, self.home, run_id, stage, attempt=attempt, wait=wait)

def _abandon_remote(pool: BackendPool, row: StageRow, handle: dict[str, Any]) -> str:
    """Stop what a stage whose runner is gone left on its backend (a pool host's processes, a Job, a
    task); the stage's cancellation message, saying so when its backend could not be reached."""
    from skyflow.backends.base import Leftover
    from skyflow.errors import SkyflowError

    try:
        pool.for_infra(row.infra or "local").abandon(Leftover(tuple(row.process_groups), handle or None,
                                                              row.log_path, row.infra))
    except SkyflowError as exc:
        return f"run cancelled; stopping it on {row.infra} failed: {exc}"
    return "run cancelled"
