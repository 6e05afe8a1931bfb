"""A private SKYFLOW_HOME, a hand-moved clock, and real `skyflow run` launches for scheduler tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skyflow.cli.schedule_commands import open_launcher
from skyflow.runner.state import RunStore
from skyflow.scheduler import ScheduleStore
from skyflow.scheduler.launch import RunLauncher


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Home:
    root: Path
    work: Path
    store: ScheduleStore
    launcher: RunLauncher

    def write(self, name: str, text: str) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def wait_runs(self, timeout_s: float = 120) -> dict[str, str]:
        """Wait until every fire's run has ended; return {run_id: outcome}."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fires = self.store.fires()
            outcomes = {f.run_id: f.outcome if f.state == "ended" else self.launcher.outcome(f) for f in fires}
            if all(o is not None for o in outcomes.values()):
                return {k: str(v) for k, v in outcomes.items()}
            time.sleep(0.1)
        raise AssertionError(f"runs still going after {timeout_s} s: {outcomes}")

    def stages(self, run_id: str) -> dict[str, str]:
        return {n: s.state for n, s in RunStore().get_run(run_id).stages.items()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKYFLOW_RETRY_BASE_S", "0.01")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    return Home(tmp_path / "home", work, ScheduleStore(tmp_path / "home" / "state.db"), open_launcher())


def clock_at(text: str) -> FakeClock:
    from datetime import datetime

    return FakeClock(datetime.fromisoformat(text).timestamp())


def fields(report: Any) -> list[str]:
    return [s.run_id for s in report.started]
