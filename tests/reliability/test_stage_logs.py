"""Stage logs stay bounded: past `logs.max_stage_log_mb` a log is rotated to `stage.log.1` with a note,
the newest output is always in `stage.log`, `skyflow logs -f` follows across a rotation, and a `\\r`
ends a line."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from skyflow.config import load_config
from skyflow.errors import SpecError
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stage-logs")]

LIMIT = 64 << 10
NOTE = "skyflow: this stage's log reached its limit of 0.0625 MiB (logs.max_stage_log_mb in config.yaml)"

# 3,000 numbered lines of 100 bytes (about 300 KB: several rotations at 64 KiB), a progress bar
# drawn with carriage returns, and a last line; with a gate in the middle for the follower test.
CHATTY = """\
name: chatty
stages:
  talk:
    run: |
      python -c 'import sys
      for i in range(1500): sys.stdout.write(f"line {{i:05d}} " + "x" * 89 + "\\n")'
      {wait}
      python -c 'import sys
      for i in range(1500, 3000): sys.stdout.write(f"line {{i:05d}} " + "x" * 89 + "\\n")'
      printf 'bar 10%%\\rbar 20%%\\rbar 30%%\\n'
      echo the last line
"""


def configure(skyflow: Skyflow, mb: str = "0.0625") -> None:
    skyflow.home.mkdir(parents=True, exist_ok=True)
    (skyflow.home / "config.yaml").write_text(f"logs: {{max_stage_log_mb: {mb}}}\n")


def test_a_log_past_its_limit_is_rotated_with_a_note_and_keeps_the_newest_output(skyflow: Skyflow) -> None:
    configure(skyflow)
    skyflow.write("chatty.yaml", CHATTY.format(wait=""))
    code, _, err = skyflow.run_json("chatty.yaml", "--no-lineage", "--run-id", "chatty")
    assert code == 0, err
    attempt = skyflow.home / "runs" / "chatty" / "talk" / "attempt-1"
    log, older = attempt / "stage.log", attempt / "stage.log.1"
    assert log.stat().st_size <= LIMIT and older.stat().st_size <= LIMIT
    lines, older_lines = log.read_text().splitlines(), older.read_text().splitlines()
    assert lines[0].startswith(NOTE) and "the part before this line is in stage.log.1" in lines[0], lines[0]
    assert lines[-5:] == ["line 02999 " + "x" * 89, "bar 10%", "bar 20%", "bar 30%", "the last line"]
    # stage.log.1 ends where stage.log begins: nothing between them is lost
    first_kept = int(lines[1].split()[1])
    assert older_lines[-1] == f"line {first_kept - 1:05d} " + "x" * 89
    shown = skyflow("logs", "chatty", "talk")
    assert shown.returncode == 0 and NOTE in shown.stdout and shown.stdout.endswith("the last line\n")


def test_logs_follow_goes_on_across_a_rotation(skyflow: Skyflow, tmp_path: Path) -> None:
    configure(skyflow)
    gate = tmp_path / "gate"
    skyflow.write("chatty.yaml", CHATTY.format(wait=f"while [ ! -f {gate} ]; do sleep 0.05; done"))
    # -q: the runner's own output (a pipe nobody reads here) must not fill up and hold the stage
    runner = skyflow.start("run", "chatty.yaml", "--no-lineage", "--run-id", "followed", "-q")
    wait_for(lambda: skyflow.stage_state("followed", "talk") is not None, 60, "the run to be recorded")
    follower = subprocess.Popen([sys.executable, "-m", "skyflow", "logs", "followed", "talk", "-f"],
                                cwd=skyflow.workdir, env=skyflow.env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(150, follower.kill)  # a follower that never ends fails the test, not CI
    watchdog.start()
    try:
        assert follower.stdout is not None
        seen = []
        for line in follower.stdout:  # the follower is reading the log that will be moved aside
            seen.append(line)
            if line.startswith("line 01499"):
                break
        gate.touch()
        rest = follower.stdout.read()
        follower.wait(timeout=60)
    finally:
        watchdog.cancel()
        gate.touch()
        runner.communicate(timeout=120)
    printed = "".join(seen) + rest
    assert follower.returncode == 0 and printed.endswith("bar 30%\nthe last line\n"), printed[-500:]
    assert NOTE in rest
    numbers = [int(line.split()[1]) for line in printed.splitlines() if line.startswith("line ")]
    assert numbers == sorted(numbers) and numbers[-1] == 2999


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_a_log_limit_that_is_not_a_positive_size_is_a_positioned_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"logs:\n  max_stage_log_mb: {value}\n")
    with pytest.raises(SpecError, match=rf"{path}:2:21: logs\.max_stage_log_mb: "):
        load_config(path)
