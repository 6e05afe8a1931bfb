"""A plan that costs `confirm_cost_usd` or more asks before anything launches: in a real pseudo-terminal
the question, a no (nothing launched, exit 1) and a yes; off a terminal it needs -y (exit 2 without)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time

import pytest

from tests.integration.runner.conftest import Skyflow
from tests.integration.runner.test_terminal import ANSI, _read_until_exit, _spawn

pytestmark = pytest.mark.integration
PIPELINE = "name: p\nstages:\n  prep:\n    run: touch {marker}\n"


def _read_until(leader: int, proc: subprocess.Popen[bytes], pattern: str, limit_s: float = 60) -> str:
    """What the terminal shows up to ``pattern`` (a deadline only against a hang, not a timing assertion)."""
    out = bytearray()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            out += os.read(leader, 65536)
            if re.search(pattern, ANSI.sub("", out.decode("utf-8", "replace"))):
                break
    return ANSI.sub("", out.decode("utf-8", "replace"))


@pytest.fixture
def asking(skyflow: Skyflow) -> Skyflow:
    """Every plan asks (a local plan is free, so the threshold is 0)."""
    (skyflow.home).mkdir(parents=True, exist_ok=True)
    (skyflow.home / "config.yaml").write_text("confirm_cost_usd: 0\n")
    skyflow.write("p.yaml", PIPELINE.format(marker=skyflow.workdir / "launched"))
    return skyflow


def test_answering_no_launches_nothing(asking: Skyflow) -> None:
    proc, leader = _spawn(asking, "run", "p.yaml", "--no-lineage", "--run-id", "asked-no")
    shown = _read_until(leader, proc, r"Launch it\? \[y/N\]")
    assert "This plan costs $0.00 (confirm_cost_usd: 0 in" in shown, shown
    os.write(leader, b"n\r")
    rest = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 1, rest
    assert "Nothing launched." in rest
    assert not (asking.workdir / "launched").exists()
    assert asking("status", "asked-no").returncode == 2  # no such run: nothing was recorded either


def test_answering_yes_runs_the_plan(asking: Skyflow) -> None:
    proc, leader = _spawn(asking, "run", "p.yaml", "--no-lineage", "--run-id", "asked-yes")
    _read_until(leader, proc, r"Launch it\? \[y/N\]")
    os.write(leader, b"y\r")
    rest = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 0, rest
    assert (asking.workdir / "launched").exists()
    assert asking.status("asked-yes")["state"] == "succeeded"


def test_yes_flag_skips_the_question_on_a_terminal(asking: Skyflow) -> None:
    proc, leader = _spawn(asking, "run", "p.yaml", "--no-lineage", "-y")
    raw = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 0, raw
    assert "Launch it?" not in raw and (asking.workdir / "launched").exists()


def test_off_a_terminal_it_needs_yes(asking: Skyflow) -> None:
    refused = asking("run", "p.yaml", "--no-lineage", "--run-id", "no-tty")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in refused.stderr
    assert "this plan costs $0.00" in message[0] and "pass -y" in message[0]
    assert not (asking.workdir / "launched").exists()
    launched = asking("run", "p.yaml", "--no-lineage", "--yes")
    assert launched.returncode == 0, launched.stderr
    assert (asking.workdir / "launched").exists()


def test_detach_asks_in_the_foreground(asking: Skyflow) -> None:
    refused = asking("run", "p.yaml", "--no-lineage", "--detach")
    assert refused.returncode == 2 and "pass -y" in refused.stderr


def test_a_cheap_plan_does_not_ask(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE.format(marker=skyflow.workdir / "launched"))
    ran = skyflow("run", "p.yaml", "--no-lineage")  # default threshold $10, local plan $0
    assert ran.returncode == 0, ran.stderr
    assert (skyflow.workdir / "launched").exists()
