"""SKYFLOW_HOME on a disk that fills up during a run: the stage fails saying which disk is full, the
run ends failed (not left "running", no traceback, no hung log thread), and resumes once space is freed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.xdist_group("full-home")]

DISK_MB = 8
LEFT_FREE = 1536 << 10  # what the filler leaves: less than the stage writes, more than the run's records need


@pytest.fixture
def full_home(tmp_path: Path) -> Iterator[Skyflow]:
    """A Skyflow whose SKYFLOW_HOME is an 8 MiB tmpfs, its state DB made; unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        work = tmp_path / "work"
        work.mkdir()
        skyflow = Skyflow(disk / "home", work)
        made = skyflow("runs")
        assert made.returncode == 0, made.stderr
        yield skyflow
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(home: Path) -> Path:
    """A filler that leaves LEFT_FREE bytes on the disk of ``home``."""
    filler = home.parent / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(home).free - LEFT_FREE))
    return filler


def run_row(home: Path, run_id: str) -> dict[str, object]:
    with sqlite3.connect(home / "state.db") as conn:
        conn.row_factory = sqlite3.Row
        run = conn.execute("SELECT state, runner_pid FROM runs WHERE run_id=?", (run_id,)).fetchone()
        stage = conn.execute("SELECT state, message FROM stages WHERE run_id=?", (run_id,)).fetchone()
    return {"run": run["state"], "runner_pid": run["runner_pid"], "stage": stage["state"], "message": stage["message"]}


# Prints 3 MiB (lines of 1 KiB) and then writes its output: more than the disk has left.
CHATTY = """\
name: chatty
stages:
  talk:
    run: |
      python -c 'import sys
      for i in range(3072): sys.stdout.write("x" * 1023 + "\\n")'
      echo done > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
"""


def test_a_stage_log_that_fills_the_disk_fails_the_stage_and_the_run_resumes(full_home: Skyflow) -> None:
    skyflow = full_home
    skyflow.write("chatty.yaml", CHATTY)
    filler = fill(skyflow.home)
    result = skyflow("run", "chatty.yaml", "--no-lineage", "--run-id", "chatty-1", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    row = run_row(skyflow.home, "chatty-1")
    assert row["run"] == "failed" and row["stage"] == "failed" and row["runner_pid"] is None, row
    message = str(row["message"])
    assert "no space left on the device holding its log" in message and "tmpfs mounted at" in message, message
    assert "skyflow resume" in message

    filler.unlink()
    resumed = skyflow("resume", "chatty-1", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert skyflow.status("chatty-1")["stages"]["talk"]["state"] == "succeeded"


# Writes 3 MiB into its output (on the same disk): the stage itself meets the full disk.
HUNGRY = """\
name: hungry
stages:
  eat:
    run: |
      head -c 3145728 /dev/zero > $SKYFLOW_OUTPUT_O/big
    outputs: [o]
"""


def test_a_stage_that_fills_the_disk_fails_cleanly_and_the_run_resumes(full_home: Skyflow) -> None:
    skyflow = full_home
    skyflow.write("hungry.yaml", HUNGRY)
    filler = fill(skyflow.home)
    result = skyflow("run", "hungry.yaml", "--no-lineage", "--run-id", "hungry-1", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    row = run_row(skyflow.home, "hungry-1")
    assert row["run"] == "failed" and row["stage"] == "failed" and row["runner_pid"] is None, row

    filler.unlink()
    shutil.rmtree(skyflow.home / "runs" / "hungry-1" / "eat" / "attempt-1")  # the user frees space
    resumed = skyflow("resume", "hungry-1", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert skyflow.status("hungry-1")["stages"]["eat"]["outputs"]["o"]["size_bytes"] == 3 << 20
