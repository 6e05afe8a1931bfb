"""The state DB held locked by another process, or damaged: waited out, or one clear line, never a traceback."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from skyflow.statedb import BUSY_TIMEOUT_MS
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("state-db")]

GATED = """\
name: gated
stages:
  a: {run: 'while [ ! -f {gate} ]; do sleep 0.05; done; echo a > $SKYFLOW_OUTPUT_O/o', outputs: [o]}
  b: {run: 'cat $SKYFLOW_INPUT_A/o > $SKYFLOW_OUTPUT_O/o', inputs: {a: a.o}, outputs: [o]}
"""


def lock(home: Path) -> sqlite3.Connection:
    """Another process's write lock on the state DB (as a long transaction or an open sqlite3 shell holds it)."""
    conn = sqlite3.connect(home / "state.db", isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def running(home: Path) -> bool:
    try:
        with sqlite3.connect(home / "state.db", timeout=30) as conn:
            return conn.execute("SELECT 1 FROM stages WHERE stage='a' AND state='running'").fetchone() is not None
    except sqlite3.OperationalError:
        return False


def test_a_run_waits_out_a_lock_held_longer_than_sqlites_own_timeout(skyflow: Skyflow, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    skyflow.write("gated.yaml", GATED.replace("{gate}", str(gate)))
    runner = skyflow.start("run", "gated.yaml", "--run-id", "locked-1", "--infra", "local", "--no-lineage", "--json")
    try:
        wait_for(lambda: running(skyflow.home), 60, "stage a to run")
        holder = lock(skyflow.home)
        gate.touch()  # stage a finishes while the lock is held: its outcome waits to be written
        # Two of SQLite's own busy timeouts and a second: a runner that gave up when SQLite did (it once
        # gave up after one 30 s timeout) fails here; skyflow's patience (300 s) is far longer.
        time.sleep(2 * BUSY_TIMEOUT_MS / 1000 + 1)
        holder.execute("ROLLBACK")
        holder.close()
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err
    assert '"state": "succeeded"' in out.splitlines()[-1]


def test_a_lock_held_past_the_patience_is_one_clear_error(skyflow: Skyflow) -> None:
    skyflow.write("gated.yaml", GATED.replace("{gate}", "/nonexistent"))
    skyflow("runs", check=True)  # makes the state DB
    holder = lock(skyflow.home)
    try:
        result = skyflow("run", "gated.yaml", "--infra", "local", "--no-lineage",
                         env={"SKYFLOW_STATE_DB_WAIT_S": "2"}, timeout=120)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "has been locked by another process for 2 s; find it with `fuser" in result.stderr


@pytest.mark.parametrize("command", [["runs"], ["status"], ["run", "gated.yaml", "--no-lineage"]],
                         ids=["runs", "status", "run"])
def test_a_damaged_state_db_is_one_clear_line_saying_how_to_recover(skyflow: Skyflow, command: list[str]) -> None:
    skyflow.write("gated.yaml", GATED.replace("{gate}", "/nonexistent"))
    skyflow.home.mkdir(parents=True)
    (skyflow.home / "state.db").write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    result = skyflow(*command)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot be read: file is not a database" in result.stderr
    assert f"mv {skyflow.home / 'state.db'} {skyflow.home / 'state.db'}.broken" in result.stderr
