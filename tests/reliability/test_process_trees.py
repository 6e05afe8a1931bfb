"""A local stage's whole process tree ends with it: children that left its process group and session
(`setsid`, a daemon's double fork) end on exit, failure, timeout, cancel, and when a later runner
abandons the attempt of a dead one."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow, wait_for
from tests.reliability.test_runner_identity import stage_groups

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("process-trees")]

# The stage starts a child in a new session (which starts a grandchild), and a daemon that double
# forks out of both (reparented away from the stage), records their pids, then does {then}.
ESCAPING = """\
name: escaping
stages:
  slow:
    {extra}
    run: |
      setsid bash -c 'sleep 300 & echo $! > {pids}/grandchild; echo $$ > {pids}/child; wait' &
      python -c 'import os, time
      if os.fork() == 0:
          os.setsid()
          if os.fork() == 0:
              open("{pids}/daemon", "w").write(str(os.getpid())); time.sleep(300)
          os._exit(0)' &
      while [ ! -s {pids}/grandchild ] || [ ! -s {pids}/child ] || [ ! -s {pids}/daemon ]; do sleep 0.02; done
      for n in child grandchild daemon; do awk '{{print $22}}' /proc/$(cat {pids}/$n)/stat > {pids}/$n.start; done
      touch {pids}/ready
      echo out > $SKYFLOW_OUTPUT_O/o
      {then}
    outputs: [o]
"""


def start_ticks(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot, /proc/PID/stat field 22); None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


class Escapees:
    """The pids the stage recorded, each with its start time as the stage read it while they ran."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[int, str] = {}

    def wait_ready(self) -> None:
        wait_for(lambda: (self.folder / "ready").exists(), 60, "the stage to start its children")
        for name in ("child", "grandchild", "daemon"):
            self.seen[int((self.folder / name).read_text())] = (self.folder / f"{name}.start").read_text().strip()
        assert len(self.seen) == 3 and all(self.seen.values()), self.seen

    def alive(self) -> list[int]:
        """The recorded processes still running (a pid now naming another process does not count)."""
        return [pid for pid, ticks in self.seen.items() if start_ticks(pid) == ticks]

    def kill(self) -> None:
        for pid in self.alive():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def escapees(tmp_path: Path) -> Iterator[Escapees]:
    folder = tmp_path / "pids"
    folder.mkdir()
    found = Escapees(folder)
    yield found
    found.kill()  # whatever the outcome, leave nothing behind


def write(skyflow: Skyflow, escapees: Escapees, then: str, extra: str = "retries: 0") -> None:
    skyflow.write("escaping.yaml", ESCAPING.format(pids=escapees.folder, then=then, extra=extra))


def test_children_that_left_the_session_end_when_the_stage_exits(skyflow: Skyflow, escapees: Escapees) -> None:
    write(skyflow, escapees, "true")
    code, status, err = skyflow.run_json("escaping.yaml", "--no-lineage", "--run-id", "exits")
    escapees.wait_ready()
    assert code == 0 and status["stages"]["slow"]["state"] == "succeeded", err
    assert escapees.alive() == []


def test_children_that_left_the_session_end_when_the_stage_fails(skyflow: Skyflow, escapees: Escapees) -> None:
    write(skyflow, escapees, "exit 3")
    code, status, err = skyflow.run_json("escaping.yaml", "--no-lineage", "--run-id", "fails")
    escapees.wait_ready()
    assert code == 1 and status["stages"]["slow"]["state"] == "failed", err
    assert escapees.alive() == []


def test_children_that_left_the_session_end_when_the_stage_times_out(skyflow: Skyflow, escapees: Escapees) -> None:
    write(skyflow, escapees, "sleep 300", extra="timeout: 3s")
    code, status, err = skyflow.run_json("escaping.yaml", "--no-lineage", "--run-id", "times-out")
    escapees.wait_ready()
    assert code == 1 and status["stages"]["slow"]["state"] == "failed", err
    shown = skyflow("status", "times-out")
    assert "timed out" in shown.stdout, shown.stdout
    assert escapees.alive() == []


def test_children_that_left_the_session_end_when_the_run_is_cancelled(skyflow: Skyflow, escapees: Escapees) -> None:
    write(skyflow, escapees, "sleep 300")
    runner = skyflow.start("run", "escaping.yaml", "--no-lineage", "--run-id", "cancelled")
    try:
        escapees.wait_ready()
        assert escapees.alive() != []  # the test can see them while the stage runs
        cancelled = skyflow("cancel", "cancelled")
        assert cancelled.returncode == 0, cancelled.stderr
        runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert skyflow.status("cancelled")["state"] == "cancelled"
    assert escapees.alive() == []


def test_children_of_a_dead_runners_stage_end_on_cancel_and_on_resume(skyflow: Skyflow, escapees: Escapees,
                                                                       tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    write(skyflow, escapees, f"while [ ! -f {gate} ]; do sleep 0.05; done")
    runner = skyflow.start("run", "escaping.yaml", "--no-lineage", "--run-id", "orphaned")
    escapees.wait_ready()
    wait_for(lambda: bool(stage_groups(skyflow.home, "orphaned")), 60, "the stage's group to be recorded")
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    assert escapees.alive() != []
    gate.touch()  # the next attempt passes at once
    resumed = skyflow("resume", "orphaned", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert escapees.alive() == []  # the abandoned attempt's children were ended before it ran again


def test_cancel_of_a_run_whose_runner_died_ends_its_stages_children(skyflow: Skyflow, escapees: Escapees) -> None:
    write(skyflow, escapees, "sleep 300")
    runner = skyflow.start("run", "escaping.yaml", "--no-lineage", "--run-id", "dead-runner")
    escapees.wait_ready()
    wait_for(lambda: bool(stage_groups(skyflow.home, "dead-runner")), 60, "the stage's group to be recorded")
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    assert escapees.alive() != []
    cancelled = skyflow("cancel", "dead-runner")
    assert cancelled.returncode == 0, cancelled.stderr
    assert escapees.alive() == []
