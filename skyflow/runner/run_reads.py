"""Reading a run's state without a Session: what `skyflow status` and `skyflow logs` need.

They read the state DB only, so they import neither the planner nor the backends, and a command
asked in a loop (a script polling a run) costs about what `python` itself costs.
"""

from __future__ import annotations

import time
from pathlib import Path

from skyflow.errors import RunError
from skyflow.matching import close_matches
from skyflow.processes import same_process
from skyflow.runner.state import RunRow, RunStore
from skyflow.states import RunState, StageState

STAGE_START_POLL_S = 0.2


def find_run(store: RunStore, run_id: str | None = None) -> RunRow:
    """A run by id, else the newest."""
    if run_id is not None:
        return store.get_run(run_id)
    runs = store.list_runs(limit=1) if store.path.is_file() else []
    if not runs:
        raise RunError("no runs yet; start one with `skyflow run PIPELINE`")
    return runs[0]


def runner_alive(run: RunRow) -> bool:
    """Whether the run's runner is alive: its pid names a live process that started when the runner
    did (a pid reused by an unrelated process after the runner died does not count)."""
    return same_process(run.runner_pid, run.runner_start)


def stage_log_path(store: RunStore, home: Path, run_id: str, stage: str, *, attempt: int | None = None,
                   wait: bool = False) -> Path:
    """The stage's log (its latest attempt, or ``attempt``); with ``wait``, wait for a pending stage to start."""
    run = store.get_run(run_id)
    if stage not in run.stages:
        matches = close_matches(stage, list(run.stages))
        raise RunError(f"run {run_id!r} has no stage {stage!r}" + (f"; did you mean {', '.join(matches)}?"
                                                                    if matches else ""))
    row = run.stages[stage]
    while wait and not row.log_path and row.state == StageState.PENDING and run.state == RunState.RUNNING:
        time.sleep(STAGE_START_POLL_S)
        run = store.get_run(run_id)
        row = run.stages[stage]
    if attempt is not None:
        path = home / "runs" / run_id / stage / f"attempt-{attempt}" / "stage.log"
        if not path.is_file():
            raise RunError(f"stage {stage!r} of run {run_id!r} has no attempt {attempt} (it made {row.attempts})")
        return path
    if not row.log_path:
        raise RunError(f"stage {stage!r} of run {run_id!r} has no log yet (it is {row.state})")
    return Path(row.log_path)
