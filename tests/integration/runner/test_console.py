"""`skyflow run` as a person sees it off a terminal: stage output streamed and prefixed, the last lines of
a failure, where outputs are; `logs --tail/--attempt/-f`; `artifacts get`; `--detach`; exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration

TWO = """\
name: two
stages:
  prep:
    run: for i in 1 2 3; do echo "prep line $i"; done; echo out > $SKYFLOW_OUTPUT_ROWS/rows.txt
    outputs: [rows]
  train:
    run: 'echo "loss=0.5 token=$API_TOKEN"; echo "oops: disk on fire" >&2; exit 3'
    inputs: {rows: prep.rows}
    secrets: [API_TOKEN]
"""


def test_stage_output_is_streamed_with_its_stage_and_a_failure_shows_its_last_lines(skyflow: Skyflow) -> None:
    skyflow.write("two.yaml", TWO)
    result = skyflow("run", "two.yaml", "--no-lineage", env={"API_TOKEN": "s3cr3t-42"})
    assert result.returncode == 1
    out = result.stdout
    assert [line for line in out.splitlines() if line.startswith("prep | ")] == [
        "prep | prep line 1", "prep | prep line 2", "prep | prep line 3"]
    assert "train | loss=0.5 token=********" in out and "s3cr3t-42" not in out
    tail = out[out.index("last lines of train"):]
    assert "oops: disk on fire" in tail and "s3cr3t-42" not in tail
    assert re.search(r"outputs: prep\.rows .*skyflow artifacts get \S+ prep\.rows", out)


def test_quiet_keeps_the_progress_and_drops_the_stage_output(skyflow: Skyflow) -> None:
    skyflow.write("two.yaml", TWO.replace("exit 3", "true"))
    out = skyflow("run", "two.yaml", "--no-lineage", "-q", env={"API_TOKEN": "x"}).stdout
    assert "prep line" not in out and "prep succeeded" in out


def test_logs_tail_attempt_and_exit_codes(skyflow: Skyflow) -> None:
    skyflow.write("retry.yaml", "name: retry\nstages:\n  flaky:\n    retries: 1\n"
                  "    run: echo \"try $SKYFLOW_RUN_ID\"; for i in 1 2 3 4; do echo line $i; done; exit 2\n")
    code, status, _ = skyflow.run_json("retry.yaml", "--no-lineage")
    run_id = status["run_id"]
    assert code == 1 and status["stages"]["flaky"]["attempts"] == 2
    tail = skyflow("logs", run_id, "flaky", "--tail", "2")
    assert tail.returncode == 1 and tail.stdout.splitlines() == ["line 3", "line 4"]  # a failed stage's logs exit 1
    first = skyflow("logs", run_id, "flaky", "--attempt", "1")
    assert first.stdout.startswith(f"try {run_id}") and first.stdout.count("line 4") == 1
    missing = skyflow("logs", run_id, "flaky", "--attempt", "5")
    assert missing.returncode == 2 and "has no attempt 5 (it made 2)" in missing.stderr
    assert skyflow("status", run_id).returncode == 1


def test_artifacts_get_copies_an_output_out_verified(skyflow: Skyflow, tmp_path: Path) -> None:
    skyflow.write("two.yaml", TWO.replace("exit 3", "true"))
    _, status, _ = skyflow.run_json("two.yaml", "--no-lineage", env={"API_TOKEN": "x"})
    got = skyflow("artifacts", "get", status["run_id"], "prep.rows", str(tmp_path / "out"), check=True)
    assert "verified" in got.stdout and (tmp_path / "out" / "rows.txt").read_text() == "out\n"
    bad = skyflow("artifacts", "get", status["run_id"], "prep.rowz")
    assert bad.returncode == 2 and "has no output 'rowz'; outputs: rows" in bad.stderr
    wrong = skyflow("artifacts", "get", status["run_id"], "prp.rows")
    assert wrong.returncode == 2 and "did you mean prep" in wrong.stderr


def test_detach_returns_at_once_and_logs_follow_waits_for_a_pending_stage(skyflow: Skyflow) -> None:
    gate = skyflow.workdir / "go"
    skyflow.write("slow.yaml", "name: slow\nstages:\n  first:\n"
                  f"    run: while [ ! -e {gate} ]; do sleep 0.05; done; echo y > $SKYFLOW_OUTPUT_O/o\n"
                  "    outputs: [o]\n    cache: false\n"
                  "  second:\n    run: echo second-ran; echo x > $SKYFLOW_OUTPUT_P/p\n"
                  "    inputs: {i: first.o}\n    outputs: [p]\n")
    started = skyflow("run", "slow.yaml", "--no-lineage", "--detach", "--run-id", "bg-1", check=True)
    assert "run bg-1 started in the background" in started.stdout and "skyflow logs bg-1 STAGE -f" in started.stdout
    wait_for(lambda: skyflow.stage_state("bg-1", "first") == "running", what="first running")
    follower = skyflow.start("logs", "bg-1", "second", "-f")  # second is pending until first ends
    gate.write_text("")
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    assert out.strip() == "second-ran"
    wait_for(lambda: skyflow.stage_state("bg-1", "second") == "succeeded", what="the detached run to finish")
    assert (skyflow.home / "runs" / "bg-1" / "runner.log").is_file()
    assert json.loads(skyflow("status", "bg-1", "--json").stdout)["stages"]["second"]["state"] == "succeeded"

