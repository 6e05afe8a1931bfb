"""Helpers for running `skyflow` as a real process against a private SKYFLOW_HOME."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class Skyflow:
    def __init__(self, home: Path, workdir: Path) -> None:
        self.home = home
        self.workdir = workdir
        self.env = {**os.environ, "SKYFLOW_HOME": str(home), "SKYFLOW_RETRY_BASE_S": "0.01",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def __call__(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "skyflow", *args], cwd=self.workdir, capture_output=True,
                                text=True, env={**self.env, **(env or {})}, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"skyflow {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "skyflow", *args], cwd=self.workdir, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**self.env, **(env or {})})

    def status(self, run_id: str) -> dict[str, Any]:
        result = self("status", run_id, "--json")
        assert result.returncode in (0, 1), result.stderr  # 1: the run failed or was cancelled
        return dict(json.loads(result.stdout))

    def stage_state(self, run_id: str, stage: str) -> str | None:
        """A stage's state, or None while no runner has recorded the run yet (a starting or detached one)."""
        shown = self("status", run_id, "--json")
        if shown.returncode == 2:  # no such run yet
            return None
        return str(json.loads(shown.stdout)["stages"][stage]["state"])

    def run_json(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
        result = self("run", *args, "--json", env=env)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON printed:\n{result.stdout}\n{result.stderr}"
        return result.returncode, json.loads(lines[-1]), result.stderr

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def skyflow(tmp_path: Path) -> Skyflow:
    work = tmp_path / "work"
    work.mkdir()
    return Skyflow(tmp_path / "home", work)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def signal_another_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to a thread of process ``pid`` other than its main one (tgkill), as the kernel may
    deliver a signal sent to the process; Python runs the handler in the main thread only."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for thread in (int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid):
        if libc.tgkill(pid, thread, signum) == 0:
            return
        assert ctypes.get_errno() == errno.ESRCH, os.strerror(ctypes.get_errno())  # else it ended: the next
    raise AssertionError(f"process {pid} runs no thread besides the main one")
