"""Who the runner is: two resumes of one dead run (one refuses), and pids reused after the runner died
(never signalled, never taken for the runner)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow.processes import group_alive
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("runner-identity")]

GATED = """\
name: gated
stages:
  slow:
    run: |
      echo "$$" >> {ledger}
      while [ ! -f {gate} ]; do sleep 0.05; done
      echo done > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
"""


def stage_groups(home: Path, run_id: str) -> list[int]:
    try:
        with sqlite3.connect(home / "state.db", timeout=30) as conn:
            row = conn.execute("SELECT process_groups FROM stages WHERE run_id=? AND stage='slow'",
                               (run_id,)).fetchone()
    except sqlite3.OperationalError:
        return []
    return list(json.loads(row[0] or "[]")) if row else []


def start_and_kill_the_runner(skyflow: Skyflow, tmp_path: Path, run_id: str) -> tuple[Path, Path, int]:
    """A run whose stage waits at a gate; its runner SIGKILLed. (gate, ledger, the stage's group)."""
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    skyflow.write("gated.yaml", GATED.format(gate=gate, ledger=ledger))
    runner = skyflow.start("run", "gated.yaml", "--run-id", run_id, "--infra", "local", "--no-lineage")
    wait_for(lambda: bool(stage_groups(skyflow.home, run_id)) and ledger.exists(), 60, "the stage to start")
    (group,) = stage_groups(skyflow.home, run_id)
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    return gate, ledger, group


# The same gated stage as a decorated pipeline, so that loading it can be made slow: a resume that
# checks the runner, then loads the pipeline, then takes the run over leaves a window that wide.
GATED_PY = """\
import os
import time
from pathlib import Path

from skyflow import Pipeline, stage

if os.environ.get("SLOW_IMPORT_S"):
    time.sleep(float(os.environ["SLOW_IMPORT_S"]))


@stage(outputs=["o"], resources={"infra": "local"})
def slow(outputs: dict, gate: str = "", ledger: str = "") -> None:
    with open(ledger, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while not Path(gate).exists():
        time.sleep(0.05)
    (outputs["o"] / "o").write_text("done\\n")


@Pipeline(name="gated-py", params={"gate": "", "ledger": ""})
def gated(params):
    slow(gate=params.gate, ledger=params.ledger)
"""


def test_two_resumes_of_one_dead_run_do_not_both_run(skyflow: Skyflow, tmp_path: Path) -> None:
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    skyflow.write("gated.py", GATED_PY)
    runner = skyflow.start("run", "gated.py:gated", "--run-id", "twice-1", "--no-lineage",
                           "--set", f"gate={gate}", "--set", f"ledger={ledger}")
    wait_for(lambda: bool(stage_groups(skyflow.home, "twice-1")) and ledger.exists(), 60, "the stage to start")
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    resumes = [skyflow.start("resume", "twice-1", "--json", env={"SLOW_IMPORT_S": "3"}) for _ in range(2)]
    try:
        wait_for(lambda: any(p.poll() is not None for p in resumes), 60, "one resume to refuse")
        (loser,) = [p for p in resumes if p.poll() is not None]
        (winner,) = [p for p in resumes if p is not loser]
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert "run 'twice-1' is" in err and ("being resumed" in err or "still running" in err), err
        assert "Traceback" not in err
        gate.touch()
        out, err = winner.communicate(timeout=120)
    finally:
        for proc in resumes:
            if proc.poll() is None:
                proc.kill()
    assert winner.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["state"] == "succeeded"
    assert len(ledger.read_text().split()) == 2  # the first run's attempt and the winner's, no third


@pytest.fixture
def strangers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Unrelated processes the test starts (after the run's processes died, as a reused pid would be)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def reuse_the_pids(home: Path, run_id: str, runner: int, group: int) -> None:
    """What the OS does after the runner and its stage died: their pids now name other processes."""
    with sqlite3.connect(home / "state.db", timeout=30) as conn:
        conn.execute("UPDATE runs SET runner_pid=? WHERE run_id=?", (runner, run_id))
        conn.execute("UPDATE stages SET process_groups=? WHERE run_id=? AND stage='slow'",
                     (json.dumps([group]), run_id))


def dead_run_with_reused_pids(skyflow: Skyflow, tmp_path: Path, run_id: str,
                              strangers: list[subprocess.Popen[bytes]]) -> tuple[Path, Path]:
    gate, ledger, group = start_and_kill_the_runner(skyflow, tmp_path, run_id)
    os.killpg(group, signal.SIGKILL)  # the dead run's stage is gone too
    wait_for(lambda: not group_alive(group), 30, "the stage's group to end")
    plain, leader = subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)
    strangers += [plain, leader]
    reuse_the_pids(skyflow.home, run_id, plain.pid, leader.pid)
    return gate, ledger


def test_resume_neither_signals_reused_pids_nor_takes_one_for_the_runner(
        skyflow: Skyflow, tmp_path: Path, strangers: list[subprocess.Popen[bytes]]) -> None:
    gate, ledger = dead_run_with_reused_pids(skyflow, tmp_path, "reuse-1", strangers)
    gate.touch()
    resumed = skyflow("resume", "reuse-1", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stderr  # not refused as "still running"
    assert json.loads(resumed.stdout.splitlines()[-1])["state"] == "succeeded"
    assert [p.poll() for p in strangers] == [None, None]  # neither was killed
    assert len(ledger.read_text().split()) == 2


def test_cancel_never_signals_reused_pids(skyflow: Skyflow, tmp_path: Path,
                                          strangers: list[subprocess.Popen[bytes]]) -> None:
    dead_run_with_reused_pids(skyflow, tmp_path, "reuse-2", strangers)
    cancelled = skyflow("cancel", "reuse-2", timeout=120)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "run reuse-2: cancelled"
    assert [p.poll() for p in strangers] == [None, None]
