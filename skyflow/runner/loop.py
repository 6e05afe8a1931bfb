"""The run loop: start or resume a run, run ready stages in parallel, record each outcome, close the run.

What to do next comes from pure functions of run state (runner.decisions); one stage's work is a
StageWork (runner.stage_work). Everything that happened goes out as RunEvents.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from skyflow.backends.base import Leftover
from skyflow.errors import RunError
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext
from skyflow.runner.decisions import blocked_stages, ready_stages, run_outcome
from skyflow.runner.events import RETRYING, RUN_STARTED, RunEvent, run_ended
from skyflow.runner.stage_work import StageOutcome, StageWork
from skyflow.runner.state import StageRow
from skyflow.signals import MAIN_THREAD_WAKE_S, acting_on_signals
from skyflow.spec.graph import ResolvedPipeline
from skyflow.states import DONE, RunState, StageState

__all__ = ["RunLoop", "check_run_id", "new_run_id"]

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
        self.upstream, self.downstream = _links(ctx.pipeline)

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    # -- entry points -------------------------------------------------------------------------
    def start(self, run_id: str, target: str, overrides: Mapping[str, Any], params: Mapping[str, Any],
              lineage: bool) -> str:
        with self._signals_cancel():
            return self._start(run_id, target, overrides, params, lineage)

    def resume(self, run_id: str, params: Mapping[str, Any]) -> str:
        with self._signals_cancel():
            return self._resume(run_id, params)

    def _start(self, run_id: str, target: str, overrides: Mapping[str, Any], params: Mapping[str, Any],
               lineage: bool) -> str:
        ctx = self.ctx
        ctx.run_id, ctx.params = check_run_id(run_id), dict(params)
        ctx.state.create_run(ctx.run_id, ctx.pipeline.name, target, ctx.pipeline.digest(), dict(overrides),
                             {"no_cache": ctx.options.no_cache, "lineage": lineage}, ctx.plan.to_json(),
                             list(ctx.pipeline.order), round(ctx.plan.total_usd, 4))
        ctx.emit(RunEvent(RUN_STARTED, None, run_id=ctx.run_id, plan=ctx.plan, params=ctx.params))
        return self._execute()

    def _resume(self, run_id: str, params: Mapping[str, Any]) -> str:
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
        backend.abandon(Leftover(tuple(row.process_groups), remote, row.log_path, row.infra))

    def cancel(self) -> None:
        ctx = self.ctx
        ctx.cancel_requested.set()
        with ctx.lock:
            handles = list(ctx.handles.values())
        for handle in handles:
            handle.cancel()

    # -- the loop -----------------------------------------------------------------------------
    def _schedule(self) -> Schedule:
        """What is ready and blocked, from one read of every stage's state (at start, and when a heal
        sent a finished stage back to pending behind the loop's back)."""
        return Schedule(self.ctx.pipeline.order, self.upstream, self.downstream,
                        self.ctx.state.stage_states(self.run_id))

    def _execute(self) -> str:
        ctx = self.ctx
        workers = ctx.options.max_parallel or ctx.backends.get("local").capacity().max_parallel
        running: dict[Future[StageOutcome], str] = {}
        schedule = self._schedule()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
            while True:
                # after a cancel the stages left are cancelled below, not "skipped because upstream failed"
                if not ctx.cancel_requested.is_set():
                    for name in schedule.take_blocked():
                        ctx.state.finish_stage(self.run_id, name, StageState.SKIPPED, {},
                                               message="an upstream stage failed")
                        # never ran: shown, but not a stage run for lineage (no row on the event)
                        ctx.emit(RunEvent(StageState.SKIPPED, name, "an upstream stage failed", run_id=self.run_id))
                    while len(running) < workers and (ready := schedule.take_ready()) is not None:
                        ctx.state.set_stage(self.run_id, ready, state=StageState.RUNNING)
                        running[pool.submit(StageWork(ctx, ready).run)] = ready
                if not running:
                    break
                # not asleep for long: Ctrl-C and SIGTERM are handled in this thread (see skyflow.signals)
                done, _ = wait(list(running), timeout=MAIN_THREAD_WAKE_S, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    outcome = future.result()
                    self._finish(name, outcome)
                    if outcome.state == StageState.PENDING:  # a producer may have been reset too: read again
                        schedule = self._schedule()
                    else:
                        schedule.finished(name, outcome.state)
            if ctx.cancel_requested.is_set():
                for name, state in ctx.state.stage_states(self.run_id).items():
                    if state in (StageState.PENDING, StageState.RUNNING):
                        ctx.state.finish_stage(self.run_id, name, StageState.CANCELLED, {}, message="run cancelled")
        return self._close()

    @contextmanager
    def _signals_cancel(self) -> Iterator[None]:
        """While the run runs, Ctrl-C and SIGTERM (`skyflow cancel`) cancel it: the stages stop, the state
        is kept, the run ends cleanly. Noted by a handler and acted on by a watcher thread: a
        KeyboardInterrupt raised wherever the loop happened to be (writing state, scheduling) would leave
        the pool waiting on the stages, and a handler taking the loop's lock while the loop holds it would
        never return. The caller's own handlers come back after (a Python program keeps its Ctrl-C)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only: the caller there keeps its own handlers
            return
        with acting_on_signals((signal.SIGINT, signal.SIGTERM), lambda _: self.cancel(), name="skyflow-run-signals"):
            yield

    def _finish(self, name: str, outcome: StageOutcome) -> None:
        ctx = self.ctx
        if outcome.state == StageState.PENDING:
            # An input was found damaged and its producer was sent back to pending in run state; this
            # stage waits for it like any pending stage, and the ready set runs the producer first.
            ctx.state.set_stage(self.run_id, name, state=StageState.PENDING, message=outcome.message,
                                process_groups=[], started_at=None)
            ctx.emit(RunEvent(RETRYING, name, outcome.message, run_id=self.run_id))
            return
        row = ctx.state.get_stage(self.run_id, name)
        duration = (time.time() - row.started_at) if row.started_at else 0.0
        ran = outcome.state in (StageState.SUCCEEDED, StageState.FAILED)  # cached/skipped cost nothing
        cost = (row.hourly_usd or 0.0) * (row.num_nodes or 1) * duration / 3600 if ran else 0.0
        ctx.state.finish_stage(self.run_id, name, outcome.state, outcome.outputs, message=outcome.message,
                               duration_s=duration, cost_usd=cost, endpoint=outcome.endpoint,
                               process_groups=outcome.service_groups)
        row = ctx.state.get_stage(self.run_id, name)  # the event carries the row as run state holds it
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


class Schedule:
    """The ready and blocked stages, kept up to date as stages finish (no I/O).

    Built once from every stage's state with the pure `ready_stages` and `blocked_stages`; then a
    finished stage updates only its downstream stages: a scheduling step costs the finished stage's
    edges, not the size of the run (a 10,000-stage run rescanned every stage at every step).
    """

    def __init__(self, order: tuple[str, ...], upstream: Mapping[str, list[str]],
                 downstream: Mapping[str, list[str]], states: Mapping[str, str]) -> None:
        self.index = {name: i for i, name in enumerate(order)}
        self.upstream, self.downstream = upstream, downstream
        self.states = dict(states)
        self.waiting = {s: sum(self.states[u] not in DONE for u in upstream[s]) for s in order}
        blocked = blocked_stages(order, upstream, self.states)
        self.blocked = list(blocked)
        for name in blocked:
            self.states[name] = StageState.SKIPPED
        self.ready = [(self.index[s], s) for s in ready_stages(order, upstream, self.states)]
        heapq.heapify(self.ready)

    def take_blocked(self) -> list[str]:
        """Stages that can never run (an upstream stage failed), in pipeline order; now skipped."""
        found, self.blocked = self.blocked, []
        return found

    def take_ready(self) -> str | None:
        """The first ready stage in pipeline order, now counted as running; None when none is ready."""
        while self.ready:
            _, name = heapq.heappop(self.ready)
            if self.states[name] == StageState.PENDING:
                self.states[name] = StageState.RUNNING
                return name
        return None

    def finished(self, name: str, state: str) -> None:
        self.states[name] = state
        if state in DONE:
            for after in self.downstream[name]:
                self.waiting[after] -= 1
                if self.waiting[after] == 0 and self.states[after] == StageState.PENDING:
                    heapq.heappush(self.ready, (self.index[after], after))
        elif state in (StageState.FAILED, StageState.SKIPPED, StageState.CANCELLED):
            self._block_below(name)

    def _block_below(self, name: str) -> None:
        """Every pending stage downstream of ``name`` is blocked (skips propagate, as in `blocked_stages`)."""
        found, todo = [], [name]
        while todo:
            for after in self.downstream[todo.pop()]:
                if self.states[after] == StageState.PENDING:
                    self.states[after] = StageState.SKIPPED
                    found.append(after)
                    todo.append(after)
        self.blocked += sorted(found, key=self.index.__getitem__)


def _links(pipeline: ResolvedPipeline) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each stage's upstream and downstream stages (data and depends_on), in pipeline order, in one pass."""
    index = {name: i for i, name in enumerate(pipeline.order)}
    before: dict[str, set[str]] = {name: set() for name in pipeline.order}
    after: dict[str, set[str]] = {name: set() for name in pipeline.order}
    pairs = [(e.producer, e.consumer) for e in pipeline.edges if e.producer] + list(pipeline.ordering)
    for a, b in pairs:
        before[b].add(a)
        after[a].add(b)
    ordered = index.__getitem__
    return ({n: sorted(s, key=ordered) for n, s in before.items()},
            {n: sorted(s, key=ordered) for n, s in after.items()})

