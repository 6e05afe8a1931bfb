"""`resources.job_recovery` on an SSH pool stage, against real sshd hosts: a stage killed from outside
on its host is recovered, `recover_on_exit_codes` recovers the codes it lists, and
`max_restarts_on_errors` bounds the restarts on any other error; recoveries do not use up `retries`.

The pool's hosts are sshd processes on this machine, so the stage's pid files and marker files are
visible here; each stage counts its attempts in a file of the test's own.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.integration.backends.conftest import SshPoolSetup
from tests.integration.backends.test_ssh_pool import _skyflow_with_pool
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 60


@pytest.fixture
def sky(tmp_path: Path, loopback_pool: SshPoolSetup) -> Skyflow:
    return _skyflow_with_pool(tmp_path, loopback_pool)


def pipeline(run: str, recovery: str, retries: int = 0) -> str:
    body = "".join(f"      {line}\n" for line in run.splitlines())
    return (f"name: recovery\nstages:\n  train:\n    resources: {{infra: ssh/lab, job_recovery: {recovery}}}\n"
            f"    retries: {retries}\n    outputs: [o]\n    run: |\n{body}")


def counting_run(count_file: Path, then: str) -> str:
    """A stage that counts its attempts in ``count_file`` ($n is this attempt's number), then does ``then``."""
    return (f"n=$(( $(cat {count_file} 2>/dev/null || echo 0) + 1 ))\necho $n > {count_file}\n{then}\n"
            "echo done > $SKYFLOW_OUTPUT_O/o\n")


def attempts(sky: Skyflow, run_id: str) -> list[tuple[int, str]]:
    """(exit code, reason) of each attempt of the stage, as run state recorded them."""
    with sqlite3.connect(sky.home / "state.db") as db:
        return [(int(code), str(reason)) for code, reason in db.execute(
            "SELECT exit_code, reason FROM attempts WHERE run_id=? AND stage='train' ORDER BY attempt", (run_id,))]


def decisions(output: str) -> list[str]:
    """What the runner decided after each failed attempt it ran again (its `retrying` lines)."""
    return [line.split("; ")[-1] for line in output.splitlines() if " train retrying: " in line]


def run(sky: Skyflow, run_id: str) -> tuple[int, str]:
    ran = sky("run", "recovery.yaml", "--no-lineage", "--run-id", run_id, timeout=RUN_TIMEOUT_S)
    return ran.returncode, ran.stdout + ran.stderr


def test_a_stage_killed_on_its_host_is_recovered(sky: Skyflow, tmp_path: Path) -> None:
    pid_file, count = tmp_path / "stage.pid", tmp_path / "count"
    # The first attempt reports its shell's pid and waits to be killed, as a reclaimed machine's stage is.
    first = f'if [ "$n" = 1 ]; then echo $$ > {pid_file}.new; mv {pid_file}.new {pid_file}; sleep 300; fi'
    sky.write("recovery.yaml", pipeline(counting_run(count, first), "{max_restarts_on_errors: 0}"))
    runner = sky.start("run", "recovery.yaml", "--no-lineage", "--run-id", "killed")
    try:
        wait_for(pid_file.exists, RUN_TIMEOUT_S, "the first attempt to start on the host")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        out, err = runner.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not end in {RUN_TIMEOUT_S} s") from None
    finally:
        runner.kill()
    status = sky.status("killed")
    assert runner.returncode == 0 and status["state"] == "succeeded", (status, out, err)
    assert status["stages"]["train"]["attempts"] == 2 and count.read_text().strip() == "2"
    first_attempt, second_attempt = attempts(sky, "killed")
    assert first_attempt[0] == -signal.SIGKILL and "SIGKILL" in first_attempt[1], first_attempt
    assert second_attempt[0] == 0
    assert [d.split(" (")[0] for d in decisions(out)] == ["recovering from preemption"], out


def test_a_stage_exiting_with_128_plus_a_signal_number_itself_is_not_recovered(sky: Skyflow, tmp_path: Path) -> None:
    # 137 is what a shell reports for a child killed by SIGKILL: an exit code, not a preemption of the stage.
    count = tmp_path / "count"
    sky.write("recovery.yaml", pipeline(counting_run(count, "exit 137"), "{max_restarts_on_errors: 0}"))
    code, shown = run(sky, "exits-137")
    status = sky.status("exits-137")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 1 and count.read_text().strip() == "1"
    assert [c for c, _ in attempts(sky, "exits-137")] == [137]
    assert decisions(shown) == [], shown


RECOVER_42 = "{max_restarts_on_errors: 0, recover_on_exit_codes: [42]}"


def test_an_exit_code_in_recover_on_exit_codes_is_recovered(sky: Skyflow, tmp_path: Path) -> None:
    count = tmp_path / "count"
    sky.write("recovery.yaml", pipeline(counting_run(count, 'if [ "$n" = 1 ]; then exit 42; fi'), RECOVER_42))
    code, shown = run(sky, "listed")
    status = sky.status("listed")
    assert code == 0 and status["state"] == "succeeded", shown
    assert status["stages"]["train"]["attempts"] == 2 and count.read_text().strip() == "2"
    assert [c for c, _ in attempts(sky, "listed")] == [42, 0]
    assert decisions(shown) == ["exit code 42 is in recover_on_exit_codes"], shown


def test_an_exit_code_not_in_recover_on_exit_codes_fails_after_one_attempt(sky: Skyflow, tmp_path: Path) -> None:
    count = tmp_path / "count"
    sky.write("recovery.yaml", pipeline(counting_run(count, 'if [ "$n" = 1 ]; then exit 43; fi'), RECOVER_42))
    code, shown = run(sky, "unlisted")
    status = sky.status("unlisted")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 1 and count.read_text().strip() == "1"
    assert [c for c, _ in attempts(sky, "unlisted")] == [43]
    assert decisions(shown) == [], shown


def test_max_restarts_on_errors_restarts_a_failing_stage(sky: Skyflow, tmp_path: Path) -> None:
    count = tmp_path / "count"
    sky.write("recovery.yaml", pipeline(counting_run(count, 'if [ "$n" -le 2 ]; then exit 1; fi'),
                                        "{max_restarts_on_errors: 2}"))
    code, shown = run(sky, "fails-twice")
    status = sky.status("fails-twice")
    assert code == 0 and status["state"] == "succeeded", shown
    assert status["stages"]["train"]["attempts"] == 3 and count.read_text().strip() == "3"
    assert [c for c, _ in attempts(sky, "fails-twice")] == [1, 1, 0]
    assert decisions(shown) == ["restart 1 of 2 on error", "restart 2 of 2 on error"], shown


def test_max_restarts_on_errors_bounds_the_restarts(sky: Skyflow, tmp_path: Path) -> None:
    count = tmp_path / "count"
    sky.write("recovery.yaml", pipeline(counting_run(count, "exit 1"), "{max_restarts_on_errors: 2}"))
    code, shown = run(sky, "always-fails")
    status = sky.status("always-fails")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 3 and count.read_text().strip() == "3"
    assert [c for c, _ in attempts(sky, "always-fails")] == [1, 1, 1]
    assert decisions(shown) == ["restart 1 of 2 on error", "restart 2 of 2 on error"], shown


def test_recoveries_do_not_use_up_retries(sky: Skyflow, tmp_path: Path) -> None:
    count = tmp_path / "count"
    fail = 'if [ "$n" = 1 ]; then exit 42; fi\nif [ "$n" = 2 ]; then exit 1; fi'
    sky.write("recovery.yaml", pipeline(counting_run(count, fail), "{recover_on_exit_codes: [42]}", retries=1))
    code, shown = run(sky, "both")
    status = sky.status("both")
    assert code == 0 and status["state"] == "succeeded", shown
    assert status["stages"]["train"]["attempts"] == 3 and count.read_text().strip() == "3"
    assert [c for c, _ in attempts(sky, "both")] == [42, 1, 0]
    assert decisions(shown) == ["exit code 42 is in recover_on_exit_codes", "retry 1 of 1"], shown
