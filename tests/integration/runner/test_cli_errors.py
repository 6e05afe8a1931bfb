"""User errors and interruptions at the command line: an env a stage needs but nobody set, a resume of
a run that is still running, `logs` of a stage the run does not have, and Ctrl-C in the middle of a run.
Each error is one line on stderr with exit code 2 and no traceback; Ctrl-C ends the run cancelled,
with nothing left running, and the run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration

NEEDED = "CLI_ERRORS_NEEDED_TOKEN"
# `skyflow resume` always records lineage: a server that is not there keeps the records in the spool
# and the resume fast.
LINEAGE_NOWHERE = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a user error prints; the command must have exited 2 without a traceback."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    return lines[0]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("declared_in", ["stage", "pipeline"])
def test_an_env_declared_without_a_value_must_be_set_before_anything_runs(skyflow: Skyflow,
                                                                         declared_in: str) -> None:
    marker = skyflow.workdir / "ran"
    envs = f"envs: {{{NEEDED}: null}}"
    skyflow.write("p.yaml", "name: p\n" + (f"{envs}\n" if declared_in == "pipeline" else "") +
                  f"stages:\n  train:\n    run: echo \"token=${NEEDED}\" > {marker}\n"
                  "    estimate: {hours: 0.01}\n" + (f"    {envs}\n" if declared_in == "stage" else ""))
    skyflow.env.pop(NEEDED, None)

    line = _one_error_line(skyflow("run", "p.yaml", "--no-lineage", "--run-id", "needs-env"))
    assert NEEDED in line and f"--env {NEEDED}=VALUE" in line, line
    if declared_in == "stage":
        assert "'train'" in line, line
    assert not marker.exists(), "the stage ran without the value it declared it needs"
    assert skyflow("status", "needs-env").returncode == 2  # no run was recorded

    ran = skyflow("run", "p.yaml", "--no-lineage", "--run-id", "from-shell", env={NEEDED: "from the shell"})
    assert ran.returncode == 0, ran.stderr
    assert marker.read_text() == "token=from the shell\n"
    given = skyflow("run", "p.yaml", "--no-lineage", "--run-id", "from-flag", "--env", f"{NEEDED}=from a flag")
    assert given.returncode == 0, given.stderr
    assert marker.read_text() == "token=from a flag\n"


def test_env_flag_without_a_value_names_the_unset_variable(skyflow: Skyflow) -> None:
    marker = skyflow.workdir / "ran"
    skyflow.write("p.yaml", f"name: p\nstages:\n  train:\n    run: echo \"token=${NEEDED}\" > {marker}\n"
                  "    estimate: {hours: 0.01}\n")
    skyflow.env.pop(NEEDED, None)

    line = _one_error_line(skyflow("run", "p.yaml", "--no-lineage", "--env", NEEDED))
    assert line == f"error: --env {NEEDED}: {NEEDED} is not set in this shell; write --env {NEEDED}=VALUE"
    assert not marker.exists()

    passed = skyflow("run", "p.yaml", "--no-lineage", "--env", NEEDED, env={NEEDED: "passed on"})
    assert passed.returncode == 0, passed.stderr
    assert marker.read_text() == "token=passed on\n"


def test_resume_of_a_run_that_is_still_running_is_refused_and_leaves_it_alone(skyflow: Skyflow) -> None:
    gate = skyflow.workdir / "release"
    skyflow.write("h.yaml", "name: h\nstages:\n  hold:\n"
                  f"    run: while [ ! -e {gate} ]; do sleep 0.1; done\n    estimate: {{hours: 0.01}}\n")
    runner = skyflow.start("run", "h.yaml", "--no-lineage", "--run-id", "busy", "-y")
    try:
        wait_for(lambda: skyflow.stage_state("busy", "hold") == "running" or runner.poll() is not None,
                 what="the stage to start")
        assert runner.poll() is None, runner.communicate()

        line = _one_error_line(skyflow("resume", "busy", env=LINEAGE_NOWHERE))
        assert line == (f"error: run 'busy' is still running (pid {runner.pid}); wait for it, or "
                        "`skyflow cancel busy` first")

        during = skyflow.status("busy")
        assert during["state"] == "running" and during["runner_alive"] is True, during
        assert during["stages"]["hold"]["state"] == "running" and during["stages"]["hold"]["attempts"] == 1

        gate.write_text("")
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
        after = skyflow.status("busy")
        assert after["state"] == "succeeded" and after["stages"]["hold"]["attempts"] == 1, after
    finally:
        gate.write_text("")
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
            skyflow("cancel", "busy")


def test_logs_of_a_stage_the_run_does_not_have(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", "name: p\nstages:\n  prepare:\n    run: echo prepared\n    estimate: {hours: 0.01}\n"
                  "  train:\n    run: echo trained\n    depends_on: [prepare]\n    estimate: {hours: 0.01}\n")
    assert skyflow("run", "p.yaml", "--no-lineage", "--run-id", "done-run").returncode == 0

    shown = skyflow("logs", "done-run", "train")
    assert shown.returncode == 0 and shown.stdout == "trained\n", shown.stderr

    typo = _one_error_line(skyflow("logs", "done-run", "trian"))
    assert typo == "error: run 'done-run' has no stage 'trian'; did you mean train?"
    unlike = _one_error_line(skyflow("logs", "done-run", "zzzz"))
    assert unlike == "error: run 'done-run' has no stage 'zzzz'"
    for follow in ("-f", "--tail"):  # the same answer whatever the options
        args = ["logs", "done-run", "trian", follow] + (["3"] if follow == "--tail" else [])
        assert _one_error_line(skyflow(*args)) == typo
    no_run = _one_error_line(skyflow("logs", "no-such-run", "train"))
    assert "no-such-run" in no_run


def test_ctrl_c_cancels_the_run_ends_its_stage_and_the_run_resumes(skyflow: Skyflow) -> None:
    pids, gate = skyflow.workdir / "pids", skyflow.workdir / "release"
    skyflow.write("c.yaml", f"""\
name: c
stages:
  slow:
    run: |
      echo $$ > {pids}
      if [ ! -e {gate} ]; then sleep 300 & echo $! >> {pids}; wait; fi
      echo finished > $SKYFLOW_OUTPUT_DONE/done
    outputs: [done]
    estimate: {{hours: 0.01}}
  after:
    run: cat $SKYFLOW_INPUT_DONE/done
    inputs: {{done: slow.done}}
    estimate: {{hours: 0.01}}
""")
    runner = skyflow.start("run", "c.yaml", "--no-lineage", "--run-id", "interrupted", "-y")
    stage_pids: list[int] = []
    try:
        wait_for(lambda: len(_pids(pids)) == 2 or runner.poll() is not None, what="the stage's sleep to start")
        assert runner.poll() is None, runner.communicate()
        stage_pids = _pids(pids)
        assert all(_alive(pid) for pid in stage_pids)

        runner.send_signal(signal.SIGINT)  # Ctrl-C, sent to the runner alone: its stage is in a session of its own
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 1, f"{out}\n{err}"  # docs/cli.md: in `run`, Ctrl-C cancels the run: exit 1
        assert "Traceback" not in out + err, err
        assert err.strip().splitlines()[-1:] == [
            "error: run interrupted cancelled; see `skyflow status interrupted` and `skyflow resume interrupted`"], err
        assert [line for line in err.splitlines() if line.startswith("error:")] == err.strip().splitlines()[-1:], err
        wait_for(lambda: not any(_alive(pid) for pid in stage_pids), 30, "the stage's processes to end")

        shown = skyflow("status", "interrupted", "--json")
        assert shown.returncode == 1, shown.stderr  # a cancelled run
        status = json.loads(shown.stdout)
        assert status["state"] == "cancelled" and "runner_alive" not in status, status
        assert {n: s["state"] for n, s in status["stages"].items()} == {"slow": "cancelled", "after": "cancelled"}

        gate.write_text("")
        resumed = skyflow("resume", "interrupted", "--json", env=LINEAGE_NOWHERE)
        assert resumed.returncode == 0, resumed.stderr
        final = json.loads(resumed.stdout.splitlines()[-1])
        assert final["state"] == "succeeded", final
        assert {n: s["state"] for n, s in final["stages"].items()} == {"slow": "succeeded", "after": "succeeded"}
    finally:
        gate.write_text("")
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        for pid in stage_pids:  # the interrupted attempt's shell and sleep, if anything left them running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
