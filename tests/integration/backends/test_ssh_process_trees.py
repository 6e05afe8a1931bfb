"""A pool stage's whole process tree ends with it on the host: children that left its process group
and session (`setsid`, a daemon's double fork) end on exit, failure, timeout, cancel, when the
runner dies, and when a later runner abandons the attempt.

The pool's hosts are sshd processes on this machine, so the stage's pid files and /proc are visible here.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow.backends.base import Leftover
from skyflow.backends.ssh import SshBackend
from tests.integration.backends.conftest import SshPoolSetup
from tests.integration.backends.contract import make_launch
from tests.integration.backends.test_ssh_pool import SSH_LAB, _skyflow_with_pool
from tests.integration.runner.conftest import Skyflow, wait_for
from tests.reliability.test_process_trees import Escapees

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 120
GONE_TIMEOUT_S = 60

# A child in a new session that keeps the stage's output open and starts a grandchild, and a daemon
# that double forks out of the stage (its intermediate subshell exits) with its output detached.
# Each records its pid and start time (/proc/PID/stat field 22), then the stage does {then}.
ESCAPING_RUN = """\
setsid bash -c 'sleep 300 & echo $! > {pids}/grandchild; echo $$ > {pids}/child; wait' &
( setsid bash -c 'echo $$ > {pids}/daemon; exec sleep 300' </dev/null >/dev/null 2>&1 & )
while [ ! -s {pids}/grandchild ] || [ ! -s {pids}/child ] || [ ! -s {pids}/daemon ]; do sleep 0.02; done
for n in child grandchild daemon; do awk '{{print $22}}' /proc/$(cat {pids}/$n)/stat > {pids}/$n.start; done
touch {pids}/ready
{then}
"""


def escaping_run(escapees: Escapees, then: str) -> str:
    return ESCAPING_RUN.format(pids=escapees.folder, then=then)


def escaping_pipeline(escapees: Escapees, then: str, extra: str = "") -> str:
    run = "".join(f"      {line}\n" for line in escaping_run(escapees, then).splitlines())
    return (f"name: escaping\nstages:\n  slow:\n    resources: {{infra: ssh/lab}}\n    retries: 0\n"
            f"{extra}    run: |\n{run}")


@pytest.fixture
def escapees(tmp_path: Path) -> Iterator[Escapees]:
    folder = tmp_path / "pids"
    folder.mkdir()
    found = Escapees(folder)
    yield found
    found.kill()  # whatever the outcome, leave nothing behind


@pytest.fixture
def sky(tmp_path: Path, loopback_pool: SshPoolSetup) -> Skyflow:
    return _skyflow_with_pool(tmp_path, loopback_pool)


def run_to_the_end(sky: Skyflow, escapees: Escapees, run_id: str) -> tuple[int, str]:
    """Run escaping.yaml; (exit code, the run's status as `skyflow status` shows it)."""
    try:
        ran = sky("run", "escaping.yaml", "--no-lineage", "--run-id", run_id, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not end in {RUN_TIMEOUT_S} s; the stage's children still running: "
                             f"{escapees.alive()}") from None
    return ran.returncode, sky("status", run_id).stdout + ran.stderr


def wait_gone(escapees: Escapees) -> None:
    wait_for(lambda: escapees.alive() == [], GONE_TIMEOUT_S, f"the stage's children to end: {escapees.alive()}")


@pytest.mark.parametrize(("then", "extra", "run_id", "exit_code", "state"), [
    ("true", "", "exits", 0, "succeeded"),
    ("exit 3", "", "fails", 1, "failed"),
    ("sleep 300", "    timeout: 5s\n", "times-out", 1, "failed"),
], ids=["stage-exits", "stage-fails", "stage-times-out"])
def test_children_that_left_the_session_end_when_the_stage_ends(
        sky: Skyflow, escapees: Escapees, then: str, extra: str, run_id: str, exit_code: int, state: str) -> None:
    sky.write("escaping.yaml", escaping_pipeline(escapees, then, extra=extra))
    code, shown = run_to_the_end(sky, escapees, run_id)
    escapees.wait_ready()
    assert code == exit_code and sky.stage_state(run_id, "slow") == state, shown
    if run_id == "times-out":
        assert "timed out" in shown, shown
    wait_gone(escapees)


def test_children_that_left_the_session_end_when_the_run_is_cancelled(sky: Skyflow, escapees: Escapees) -> None:
    sky.write("escaping.yaml", escaping_pipeline(escapees, "sleep 300"))
    runner = sky.start("run", "escaping.yaml", "--no-lineage", "--run-id", "cancelled")
    try:
        escapees.wait_ready()
        assert escapees.alive() != []  # the test can see them while the stage runs
        cancelled = sky("cancel", "cancelled")
        assert cancelled.returncode == 0, cancelled.stderr
        runner.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the cancelled run did not end in {RUN_TIMEOUT_S} s; the stage's children "
                             f"still running: {escapees.alive()}") from None
    finally:
        runner.kill()
    assert sky.status("cancelled")["state"] == "cancelled"
    wait_gone(escapees)


def test_children_that_left_the_session_end_when_the_runner_is_killed(sky: Skyflow, escapees: Escapees) -> None:
    sky.write("escaping.yaml", escaping_pipeline(escapees, "sleep 300"))
    runner = sky.start("run", "escaping.yaml", "--no-lineage", "--run-id", "runner-killed")
    try:
        escapees.wait_ready()
        assert escapees.alive() != []
        runner.send_signal(signal.SIGKILL)  # no cleanup from the runner: the host notices the lost connection
        runner.communicate(timeout=30)
    finally:
        runner.kill()
    wait_gone(escapees)


def test_children_that_left_the_session_end_when_the_attempt_is_abandoned(tmp_path: Path, escapees: Escapees,
                                                                          loopback_pool: SshPoolSetup) -> None:
    # The first backend keeps its connection, as a host that kept a dead runner's session alive would.
    running = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    launch = make_launch(tmp_path, escaping_run(escapees, "sleep 300"), placement=SSH_LAB)
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = running.launch(launch)
    escapees.wait_ready()
    assert escapees.alive() != []
    later = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    later.abandon(Leftover(tuple(handle.process_groups), handle.remote))
    wait_gone(escapees)
    assert not handle.wait().ok


def test_a_node_that_ends_first_leaves_the_other_nodes_running(tmp_path: Path, loopback_pool: SshPoolSetup) -> None:
    # Both hosts of the loopback pool are this machine: what one node ends must be its own processes only.
    backend = SshBackend("lab", loopback_pool.pool, known_hosts=str(loopback_pool.known_hosts))
    ended = tmp_path / "node-1-ended"
    launch = make_launch(tmp_path, f'if [ "$SKYPILOT_NODE_RANK" = 1 ]; then touch {ended}; exit 0; fi\n'
                                   f"while [ ! -f {ended} ]; do sleep 0.05; done\n"
                                   "sleep 2\necho still here > $SKYFLOW_OUTPUT_MODEL/head.txt\n",
                         num_nodes=2, placement=SSH_LAB)
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    exit_ = backend.launch(launch).wait()
    assert exit_.ok, (exit_, launch.log_path.read_text())
    assert (launch.outputs["model"] / "head.txt").read_text() == "still here\n"


def test_children_on_the_host_end_when_a_run_whose_runner_is_stuck_is_cancelled(
        sky: Skyflow, escapees: Escapees, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stopped runner never answers SIGTERM: `cancel` kills it and stops the stage itself, on the pool's
    # host, through the backend (that path alone, with the connection kept: ..._when_the_attempt_is_abandoned).
    from skyflow.session import Session

    sky.write("escaping.yaml", escaping_pipeline(escapees, "sleep 300"))
    runner = sky.start("run", "escaping.yaml", "--no-lineage", "--run-id", "stuck")
    try:
        escapees.wait_ready()
        runner.send_signal(signal.SIGSTOP)
        monkeypatch.setenv("SKYFLOW_SSH_KNOWN_HOSTS", sky.env["SKYFLOW_SSH_KNOWN_HOSTS"])
        session = Session(home=sky.home)
        assert session.cancel("stuck", timeout_s=0.5) == "cancelled"
        assert runner.wait(timeout=30) == -signal.SIGKILL
        wait_gone(escapees)
        assert session.state.get_run("stuck").stages["slow"].message == "run cancelled"
    finally:
        runner.kill()
        runner.communicate(timeout=30)
