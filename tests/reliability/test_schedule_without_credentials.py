"""Schedules on a machine without cloud credentials: adding one that watches an `s3://` input needs no
data (a warning, not a traceback), the scheduler keeps running, and the scheduler's store speaks
skyflow's errors for a damaged state DB."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from skyflow.errors import SchedulerError
from skyflow.scheduler.store import ScheduleStore

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("schedule-credentials")]

WATCHES_S3 = """\
name: watches
inputs:
  raw: s3://skyflow-no-such-bucket/data/
schedule: {on_change: [raw]}
stages:
  a:
    inputs: {d: raw}
    run: echo hi
"""


def bare_env(tmp_path: Path) -> dict[str, str]:
    """An empty HOME and no cloud variables: nothing for a storage library to find credentials in."""
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "SKYFLOW_HOME": str(tmp_path / "skyflow-home")}


def skyflow(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyflow", *args], cwd=tmp_path, env=bare_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def test_adding_a_schedule_of_an_s3_input_needs_no_credentials(tmp_path: Path) -> None:
    (tmp_path / "watches.yaml").write_text(WATCHES_S3)
    added = skyflow(tmp_path, "schedule", "add", "watches.yaml")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "Traceback" not in added.stderr
    assert "schedule watches: on change of raw" in added.stdout
    warning = [line for line in added.stderr.splitlines() if line.strip()]
    assert len(warning) == 1 and "no baseline of raw yet" in warning[0] and \
        "s3://skyflow-no-such-bucket/data/" in warning[0], added.stderr
    listed = skyflow(tmp_path, "schedule", "list")
    assert listed.returncode == 0 and "watches" in listed.stdout, listed.stdout + listed.stderr

    # The scheduler polls the input it cannot read, says so, and keeps running.
    scheduler = subprocess.Popen([sys.executable, "-m", "skyflow", "scheduler", "--interval", "0.2"], cwd=tmp_path,
                                 env=bare_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, scheduler.kill)  # a scheduler that never says it: the test fails, not hangs
    watchdog.start()
    seen = []
    try:
        assert scheduler.stdout is not None
        for line in scheduler.stdout:
            seen.append(line)
            if "cannot poll raw" in line:
                break
        assert scheduler.poll() is None, "".join(seen)  # still running after it met the unreadable input
    finally:
        watchdog.cancel()
        # SIGTERM ends the loop after the pass under way, even one that is writing a log line as it
        # arrives (a handler that logged then met a "reentrant call" and the scheduler never stopped).
        scheduler.send_signal(signal.SIGTERM)
        rest, _ = scheduler.communicate(timeout=120)
    output = "".join(seen) + rest
    assert "Traceback" not in output and "cannot poll raw" in output, output


def test_the_schedule_store_raises_scheduler_errors_for_a_damaged_state_db(tmp_path: Path) -> None:
    db = tmp_path / "skyflow-home" / "state.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(SchedulerError, match=r"cannot be read: file is not a database.*mv .*state\.db"):
        ScheduleStore(db)
    listed = skyflow(tmp_path, "schedule", "list")
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
    assert listed.stderr.count("\n") == 1 and "mv " in listed.stderr, listed.stderr
