"""The run loop: start or resume a run, run ready stages in parallel, record each outcome, close the run.

What to do next comes from pure functions of run state (runner.decisions); one stage's work is a
StageWork (runner.stage_work). Everything that happened goes out as RunEvents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from skyflow.backends.base import Leftover
from skyflow.errors import RunError
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext
from skyflow.runner.decisions import blocked_stages, ready_stages, run_outcome
from skyflow.runner.events import RETRYING, RUN_STARTED, RunEvent, run_ended
from skyflow.runner.stage_work import StageOutcome, StageWork
from skyflow.runner.state import StageRow
from skyflow.states import DONE, RunState, StageState

__all__ = ["RunLoop", "check_run_id", "install_signal_handlers", "new_run_id"]

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id(pipeline: str) -> str:
    return f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def check_run_id(run_id: str) -> str:
    """A run id names directories and appears in stage scripts: letters, digits, '.', '_', '-' only."""
    if not RUN_ID.fullmatch(run_id):
        raise RunError(f"run id {run_id!r} is not allowed: use up to 128 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit (e.g. --run-id ci-3f2a9c1)")
    return run_id


class RunLoop:
    """Runs one pipeline run to its end (or resumes one)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.upstream = {s: ctx.pipeline.upstream(s) for s in ctx.pipeline.order}

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    # -- entry points -------------------------------------------------------------------------
    def start(self, run_id: str, target: str, overrides: Mapping[str, Any], params: Mapping[str, Any],
              lineage: bool) -> str:
        ctx = self.ctx
        ctx.run_id, ctx.params = check_run_id(run_id), dict(params)
        ctx.state.create_run(ctx.run_id, ctx.pipeline.name, target, ctx.pipeline.digest(), dict(overrides),
                             {"no_cache": ctx.options.no_cache, "lineage": lineage}, ctx.plan.to_json(),
                             list(ctx.pipeline.order), round(ctx.plan.total_usd, 4))
        ctx.emit(RunEvent(RUN_STARTED, None, run_id=ctx.run_id, plan=ctx.plan, params=ctx.params))
        return self._execute()

    def resume(self, run_id: str, params: Mapping[str, Any]) -> str:
        ctx = self.ctx
        ctx.run_id, ctx.params = run_id, dict(params)
        run = ctx.state.get_run(run_id)
        for name, row in run.stages.items():
            if row.state == StageState.RUNNING:
                self._abandon(row)
            keep = row.state in DONE and artifact_io.outputs_still_there(row.outputs, ctx.local_store())
            if not keep:
                ctx.state.set_stage(run_id, name, state=StageState.PENDING, attempts=0, message=None,
                                    process_groups=[], started_at=None, ended_at=None)
        ctx.state.set_run(run_id, state=RunState.RUNNING, runner_pid=os.getpid(), ended_at=None)
        ctx.state.reset_heals(run_id)  # a resume may heal damaged outputs afresh
        ctx.emit(RunEvent(RUN_STARTED, None, run_id=run_id, plan=ctx.plan, params=ctx.params))
        return self._execute()

    def _abandon(self, row: StageRow) -> None:
        """Stop what a dead runner's attempt left: local process groups, or a remote Job, task or service."""
        remote = json.loads(row.remote_handle) if row.remote_handle else None
        backend = self.ctx.backends.for_infra(row.infra or "local")
        backend.abandon(Leftover(tuple(row.process_groups), remote))

    def cancel(self) -> None:
        ctx = self.ctx
        ctx.cancel_requested.set()
        with ctx.lock:
            handles = list(ctx.handles.values())
        for handle in handles:
            handle.cancel()

    # -- the loop -----------------------------------------------------------------------------
    def _states(self) -> dict[str, str]:
        return {n: r.state for n, r in self.ctx.state.get_run(self.run_id).stages.items()}

    def _execute(self) -> str:
        ctx = self.ctx
        workers = ctx.options.max_parallel or ctx.backends.get("local").capacity().max_parallel
        running: dict[Future[StageOutcome], str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
            while True:
                states = self._states()
                # after a cancel the stages left are cancelled below, not "skipped because upstream failed"
                blocked = [] if ctx.cancel_requested.is_set() else blocked_stages(ctx.pipeline.order, self.upstream,
                                                                                  states)
                for name in blocked:
                    ctx.state.finish_stage(self.run_id, name, StageState.SKIPPED, {},
                                           message="an upstream stage failed")
                    # never ran: shown, but not a stage run for lineage (no row on the event)
                    ctx.emit(RunEvent(StageState.SKIPPED, name, "an upstream stage failed", run_id=self.run_id))
                    states[name] = StageState.SKIPPED
                if not ctx.cancel_requested.is_set():
                    for name in ready_stages(ctx.pipeline.order, self.upstream, states):
                        if name in running.values() or len(running) >= workers:
                            continue
                        ctx.state.set_stage(self.run_id, name, state=StageState.RUNNING)
                        running[pool.submit(StageWork(ctx, name).run)] = name
                if not running:
                    break
                try:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:  # Ctrl-C: stop the stages, keep the state, finish cleanly
                    self.cancel()
                    continue
                for future in done:
                    name = running.pop(future)
                    self._finish(name, future.result())
            if ctx.cancel_requested.is_set():
                for name, state in self._states().items():
                    if state in (StageState.PENDING, StageState.RUNNING):
                        ctx.state.finish_stage(self.run_id, name, StageState.CANCELLED, {}, message="run cancelled")
        return self._close()

    def _finish(self, name: str, outcome: StageOutcome) -> None:
        ctx = self.ctx
        if outcome.state == StageState.PENDING:
            # An input was found damaged and its producer was sent back to pending in run state; this
            # stage waits for it like any pending stage, and the ready set runs the producer first.
            ctx.state.set_stage(self.run_id, name, state=StageState.PENDING, message=outcome.message,
                                process_groups=[], started_at=None)
            ctx.emit(RunEvent(RETRYING, name, outcome.message, run_id=self.run_id))
            return
        row = ctx.state.get_run(self.run_id).stages[name]
        duration = (time.time() - row.started_at) if row.started_at else 0.0
        ran = outcome.state in (StageState.SUCCEEDED, StageState.FAILED)  # cached/skipped cost nothing
        cost = (row.hourly_usd or 0.0) * (row.num_nodes or 1) * duration / 3600 if ran else 0.0
        ctx.state.finish_stage(self.run_id, name, outcome.state, outcome.outputs, message=outcome.message,
                               duration_s=duration, cost_usd=cost, endpoint=outcome.endpoint,
                               process_groups=outcome.service_groups)
        row = ctx.state.get_run(self.run_id).stages[name]  # the event carries the row as run state holds it
        ctx.emit(RunEvent(outcome.state, name, outcome.message, cost_usd=cost, duration_s=duration,
                          run_id=self.run_id, row=row))

    def _close(self) -> str:
        ctx = self.ctx
        run = ctx.state.get_run(self.run_id)
        outcome = run_outcome({n: s.state for n, s in run.stages.items()})
        # Compute as run, plus the data really moved, each transfer priced by the rule that applied.
        actual = sum(s.cost_usd or 0.0 for s in run.stages.values()) + ctx.state.egress_usd(self.run_id)
        ctx.state.set_run(self.run_id, state=outcome, ended_at=time.time(), actual_usd=actual, runner_pid=None)
        ctx.emit(RunEvent(run_ended(outcome), None, self.run_id, cost_usd=actual, run_id=self.run_id,
                          totals={"actual_usd": actual, "estimated_usd": run.estimated_usd or 0.0}))
        return outcome


def install_signal_handlers(loop: RunLoop) -> None:
    """SIGTERM (skyflow cancel) cancels cleanly, like Ctrl-C."""
    def handler(signum: int, frame: Any) -> None:
        loop.cancel()

    signal.signal(signal.SIGTERM, handler)
