"""`skyflow schedule list` as a table: each schedule's trigger, whether it is paused, its policy, and
whether a scheduler holds the lease that fires them."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from skyflow.scheduler.store import ScheduleStore
from tests.unit.cli.cli_helpers import run

PIPELINE = """\
name: nightly
stages:
  train: {run: 'echo train', outputs: [model]}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nightly.yaml").write_text(PIPELINE)
    return tmp_path


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_the_table_shows_each_schedule_and_that_no_scheduler_runs(workdir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schedule", "add", "nightly.yaml", "--cron", "0 3 * * *", "--timezone", "Europe/Berlin"],
               capsys)[0] == 0
    assert run(["schedule", "add", "nightly.yaml", "--name", "hourly", "--cron", "0 * * * *",
                "--concurrency", "allow", "--catchup", "none"], capsys)[0] == 0
    assert run(["schedule", "pause", "hourly"], capsys)[0] == 0
    code, out, _ = run(["schedule", "list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].strip() == "schedules"
    rows = {cells(line)[0]: cells(line)[1:] for line in lines if line.startswith("│") and "name" not in line}
    assert set(rows) == {"hourly (paused)", "nightly"}
    trigger, next_fire, policy, last_run, state = rows["nightly"]
    assert (trigger, policy, last_run, state) == ("cron '0 3 * * *' Europe/Berlin", "forbid/latest", "-", "-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT03:00:00\+0[12]:00", next_fire)
    assert rows["hourly (paused)"][0] == "cron '0 * * * *' UTC" and rows["hourly (paused)"][2] == "allow/none"
    assert lines[-1] == "scheduler: not running"


def test_the_table_names_the_scheduler_that_holds_the_lease(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ScheduleStore(workdir / "home" / "state.db")
    assert store.acquire_lease("scheduler-7", 4242, socket.gethostname(), time.time(), ttl_s=3600)
    code, out, _ = run(["schedule", "list"], capsys)
    assert code == 0 and out.splitlines()[-1] == "scheduler: running as scheduler-7"
    store.release_lease("scheduler-7")
    assert run(["schedule", "list"], capsys)[1].splitlines()[-1] == "scheduler: not running"
