"""Start a scheduled run as its own `skyflow run` process, tell whether it is still going, stop it.

A run gets its own process (as `skyflow run` from a shell would): it plans with the same code, owns
its signal handlers, outlives a scheduler restart, and several may run at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skyflow.errors import SchedulerError, SkyflowError
from skyflow.processes import process_alive
from skyflow.scheduler.store import FireRow, ScheduleRecord

# The runner's view of a run id: (state, runner pid), or None when no such run exists (yet).
RunStateFn = Callable[[str], tuple[str, int | None] | None]
# Ask a run's runner to stop; returns the run's state afterwards.
CancelRunFn = Callable[[str, float], str]


def run_command(record: ScheduleRecord, run_id: str) -> list[str]:
    """The `skyflow run` command line for one fire of ``record``. A fired run never asks before it
    spends (nobody is there to answer; adding the schedule was the yes): `--yes` is added to
    schedules stored before `schedule add` wrote it."""
    args = [sys.executable, "-m", "skyflow", "run", record.target, "--run-id", run_id]
    for key, value in sorted(record.params.items()):
        args += ["--set", f"{key}={_yaml_scalar(value)}"]
    given = list(record.run_args)
    return args + given + ([] if {"--yes", "-y"} & set(given) else ["--yes"])


def _yaml_scalar(value: object) -> str:
    import json

    # --set reads YAML scalars; JSON spells bools, numbers and null the way YAML reads them back.
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class RunLauncher:
    """Starts runs in new sessions, logging each to ``log_dir/RUN_ID.log``, and reaps its children.

    The runner's state and cancel come in as functions (the CLI passes the runner's own), which keeps
    the scheduler beside the runner rather than above it.
    """

    log_dir: Path
    run_state: RunStateFn
    cancel_run: CancelRunFn

    def __post_init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, record: ScheduleRecord, fire: FireRow) -> tuple[int, str]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{fire.run_id}.log"
        cwd = Path(record.target.split(":", 1)[0]).parent
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(run_command(record, fire.run_id), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=cwd if cwd.is_dir() else None,
                                        start_new_session=True)
        except OSError as exc:
            raise SchedulerError(f"cannot start run {fire.run_id}: {exc}") from exc
        self._children[proc.pid] = proc
        return proc.pid, str(log_path)

    def reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def outcome(self, fire: FireRow) -> str | None:
        """None while the fire's run is going; else how it ended (the run's state, or why it never ran)."""
        self.reap()
        run = self.run_state(fire.run_id)
        if run is not None and run[0] != "running":
            return run[0]
        if process_alive(fire.pid) or (run is not None and process_alive(run[1])):
            return None
        return "died" if run is not None else "not started (see its log)"

    def cancel(self, fire: FireRow, timeout_s: float = 30.0) -> str:
        """Stop the fire's run the way `skyflow cancel` does; a run still planning is terminated."""
        if self.run_state(fire.run_id) is None:
            return self._terminate(fire.pid, timeout_s)
        try:
            return self.cancel_run(fire.run_id, timeout_s)
        except SkyflowError as exc:  # it ended on its own meanwhile
            return str(exc)

    def _terminate(self, pid: int | None, timeout_s: float) -> str:
        if not process_alive(pid):
            return "ended"
        assert pid is not None
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return "ended"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process_alive(pid):
            self.reap()
            time.sleep(0.05)
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.reap()
        return "cancelled"
