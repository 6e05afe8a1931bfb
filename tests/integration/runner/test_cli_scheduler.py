"""`skyflow scheduler` tells once that a watched input cannot be polled (a storage library missing,
say), not again on every poll."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

WATCHING = """\
name: watching
inputs:
  data: {uri: "oci://bucket@namespace/data"}
stages:
  a:
    run: echo hi
    inputs: {d: data}
"""


def test_a_poll_problem_is_warned_once_not_on_every_poll(skyflow: Skyflow) -> None:
    skyflow.write("w.yaml", WATCHING)
    added = skyflow("schedule", "add", "w.yaml", "--on-change", "data", "--infra", "local")
    assert added.returncode == 0, added.stderr
    proc = subprocess.Popen([sys.executable, "-m", "skyflow", "-v", "scheduler", "--interval", "0.05"],
                            cwd=skyflow.workdir, env=skyflow.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    problems: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # until the same problem was met on three polls
            if "cannot poll data" in line:
                problems.append(line)
                if len(problems) == 3:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert len(problems) == 3, problems
    assert "Install ocifs" in problems[0]
    assert [" WARNING " in line for line in problems] == [True, False, False], problems
