"""`skyflow run` in a real pseudo-terminal: the live table, stage output above it with each stage's
name coloured, Ctrl-C cancelling cleanly with the state kept for resume."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(skyflow: Skyflow, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    leader, follower = pty.openpty()
    env = {**skyflow.env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "skyflow", *args], cwd=skyflow.workdir, env=env,
                            stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    return proc, leader


def _read_until_exit(proc: subprocess.Popen[bytes], leader: int, limit_s: float = 120) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    return bytes(out)


def test_stage_output_is_coloured_by_stage_above_the_live_table(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", "name: p\nstages:\n  prep:\n    run: echo hello-from-prep\n"
                  "  train:\n    run: echo hello-from-train\n    depends_on: [prep]\n")
    proc, leader = _spawn(skyflow, "run", "p.yaml", "--no-lineage")
    raw = _read_until_exit(proc, leader).decode("utf-8", "replace")
    assert proc.returncode == 0, raw
    plain = ANSI.sub("", raw)
    assert "prep | hello-from-prep" in plain and "train | hello-from-train" in plain
    # each stage's name carries a colour of its own, right before its line
    prep = re.search(r"\x1b\[([0-9;]+)mprep\x1b\[0m \| hello-from-prep", raw)
    train = re.search(r"\x1b\[([0-9;]+)mtrain\x1b\[0m \| hello-from-train", raw)
    assert prep and train and prep.group(1) != train.group(1), raw[:2000]
    assert "run " in plain and "succeeded" in plain


def test_ctrl_c_cancels_and_the_run_resumes(skyflow: Skyflow) -> None:
    gate = skyflow.workdir / "release"
    skyflow.write("p.yaml", "name: p\nstages:\n  wait:\n"
                  f"    run: echo waiting; while [ ! -e {gate} ]; do sleep 0.1; done\n"
                  "  after:\n    run: echo after\n    depends_on: [wait]\n")
    proc, leader = _spawn(skyflow, "run", "p.yaml", "--no-lineage", "--run-id", "tty-1")
    wait_for(lambda: skyflow.stage_state("tty-1", "wait") == "running", what="the stage to start")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
    raw = _read_until_exit(proc, leader).decode("utf-8", "replace")
    assert proc.returncode == 1, raw
    assert "Traceback" not in raw
    status = skyflow.status("tty-1")
    assert status["state"] == "cancelled" and status["stages"]["after"]["state"] == "cancelled"
    assert "upstream stage failed" not in skyflow("status", "tty-1").stdout
    gate.write_text("")
    resumed = skyflow("resume", "tty-1", "--json")
    assert resumed.returncode == 0, resumed.stderr
