"""Scale: the run loop's work per stage does not grow with the run (a 10,000-stage run reread the
whole run from the state DB at every scheduling step). Counted, not timed: the rows read from the
real state DB while real no-op stages run on the local backend.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.planner import Plan
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.decisions import blocked_stages, ready_stages
from skyflow.runner.events import EventBus
from skyflow.runner.loop import RunLoop, Schedule
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState


class CountingRunStore(RunStore):
    """The real state DB, counting every row any statement hands back (on every thread's connection)."""

    rows_read = 0

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        if conn.row_factory is sqlite3.Row:
            def counted(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> sqlite3.Row:
                CountingRunStore.rows_read += 1
                return sqlite3.Row(cursor, row)

            conn.row_factory = counted
        return conn


def _chain(n: int) -> str:
    lines = [f"name: chain{n}", "stages:"]
    for i in range(n):
        lines += [f"  s{i}:", "    run: echo x > $SKYFLOW_OUTPUT_X/x", "    outputs: [x]"]
        if i:
            lines.append(f"    inputs: {{prev: s{i - 1}.x}}")
    return "\n".join(lines) + "\n"


def _rows_read_by_a_run(tmp_path: Path, n: int) -> int:
    work = tmp_path / f"n{n}"
    work.mkdir()
    (work / "chain.yaml").write_text(_chain(n))
    pipeline = load_pipeline(work / "chain.yaml")
    home = work / "home"
    state = CountingRunStore(home / "state.db")
    ctx = RunContext(pipeline=pipeline, plan=Plan(pipeline.name, "cost", {}, (), 0.0, 0.0), state=state,
                     backends=BackendPool(BackendContext()), options=RunOptions(no_cache=True, env=dict(os.environ)),
                     emit=EventBus([]), home=home, secrets={})
    CountingRunStore.rows_read = 0
    assert RunLoop(ctx).start("r1", "chain.yaml", {}, {}, lineage=False) == "succeeded"
    return CountingRunStore.rows_read


def test_rows_read_from_run_state_grow_linearly_with_the_stages(tmp_path: Path) -> None:
    small, large = _rows_read_by_a_run(tmp_path, 10), _rows_read_by_a_run(tmp_path, 100)
    print(f"rows read: 10 stages {small}, 100 stages {large}")
    # Per stage a bounded number of rows (its own row, its producer's, their outputs) plus one whole-run
    # read at the start and one at the end. Rereading the run at every step made 100 stages read ~40,000.
    assert large <= 10 * small + 4 * 100


def _random_dag(rng: random.Random, n: int) -> tuple[tuple[str, ...], dict[str, list[str]], dict[str, list[str]]]:
    order = tuple(f"s{i}" for i in range(n))
    upstream: dict[str, list[str]] = {s: [] for s in order}
    downstream: dict[str, list[str]] = {s: [] for s in order}
    for i in range(1, n):
        for p in sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))):
            upstream[order[i]].append(order[p])
            downstream[order[p]].append(order[i])
    return order, upstream, downstream


@pytest.mark.parametrize("seed", range(25))
def test_the_incremental_schedule_agrees_with_the_pure_ready_and_blocked_sets(seed: int) -> None:
    """Run a random DAG to its end with random outcomes: at every step the schedule's ready and
    blocked stages are exactly what `ready_stages` and `blocked_stages` say of the same states."""
    rng = random.Random(seed)
    order, upstream, downstream = _random_dag(rng, rng.randint(1, 30))
    states = {s: str(StageState.PENDING) for s in order}
    schedule = Schedule(order, upstream, downstream, states)
    running: list[str] = []
    while True:
        expected_blocked = blocked_stages(order, upstream, states)
        assert schedule.take_blocked() == expected_blocked
        for name in expected_blocked:
            states[name] = StageState.SKIPPED
        expected_ready = ready_stages(order, upstream, states)
        taken = []
        while (ready := schedule.take_ready()) is not None:
            taken.append(ready)
        assert taken == expected_ready
        for name in taken:
            states[name] = StageState.RUNNING
        running += taken
        if not running:
            break
        done = running.pop(rng.randrange(len(running)))
        outcome = rng.choice([StageState.SUCCEEDED, StageState.SUCCEEDED, StageState.CACHED, StageState.FAILED])
        states[done] = outcome
        schedule.finished(done, outcome)
    assert all(s != StageState.PENDING for s in states.values())
