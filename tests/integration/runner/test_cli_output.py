"""What the console says about runs: plain progress lines, `status` of a run with lineage and of one
whose runner died, the summary printed once on a terminal, durations people read, the global -q,
and shell completion of pipeline files and run ids."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.runner.conftest import Skyflow, wait_for
from tests.integration.runner.test_terminal import ANSI, _read_until_exit, _spawn

pytestmark = pytest.mark.integration

PIPELINE = "name: p\nstages:\n  prep:\n    run: echo hello-from-prep\n  train:\n    run: echo trained\n" \
           "    depends_on: [prep]\n"


def test_plain_progress_says_run_id_then_state(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    ran = skyflow("run", "p.yaml", "--no-lineage", "--run-id", "plain-1")
    assert ran.returncode == 0, ran.stderr
    assert "] run plain-1 succeeded" in ran.stdout
    assert "run-succeeded" not in ran.stdout


def test_status_says_where_lineage_is(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    assert skyflow("run", "p.yaml", "--run-id", "with-lineage").returncode == 0
    shown = skyflow("status", "with-lineage", env={"COLUMNS": "400"})  # the long path on one line
    assert shown.returncode == 0, shown.stderr
    assert f"lineage: MLflow sqlite store {skyflow.home.resolve() / 'mlflow.db'}" in shown.stdout
    assert skyflow("run", "p.yaml", "--no-lineage", "--run-id", "without").returncode == 0
    without = skyflow("status", "without", env={"COLUMNS": "400"}).stdout
    assert "lineage: not recorded (the run had --no-lineage)" in without


def test_a_run_whose_runner_died_is_not_shown_as_simply_running(skyflow: Skyflow) -> None:
    gate = skyflow.workdir / "go"
    skyflow.write("w.yaml", f"name: w\nstages:\n  wait:\n    run: while [ ! -e {gate} ]; do sleep 0.1; done\n")
    runner = skyflow.start("run", "w.yaml", "--no-lineage", "--run-id", "orphan")
    try:
        wait_for(lambda: skyflow.stage_state("orphan", "wait") == "running", what="the stage to start")
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
        shown = skyflow("status", "orphan")
        assert shown.returncode == 1, shown.stdout + shown.stderr
        assert "run orphan: running, but its runner is gone" in shown.stdout
        assert "`skyflow resume orphan` continues it" in shown.stdout
        assert skyflow.status("orphan")["runner_alive"] is False
    finally:
        skyflow("cancel", "orphan")  # ends the stage the dead runner left behind
        gate.write_text("")


def test_a_terminal_shows_the_final_table_once(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    proc, leader = _spawn(skyflow, "run", "p.yaml", "--no-lineage", "--run-id", "once")
    shown = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 0, shown
    assert shown.count("run once: succeeded") == 1, shown


def test_plan_hours_read_as_durations(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    assert skyflow("run", "p.yaml", "--no-lineage").returncode == 0  # history: seconds-long stages
    shown = skyflow("plan", "p.yaml")
    assert shown.returncode == 0, shown.stderr
    assert "e-0" not in shown.stdout and "<1 s" in shown.stdout


def test_global_quiet_drops_stage_output_and_warnings(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    unusable = {"MLFLOW_TRACKING_URI": "bogus://nowhere"}  # lineage cannot be recorded: a warning
    loud = skyflow("run", "p.yaml", env=unusable)
    assert loud.returncode == 0, loud.stderr
    assert "prep | hello-from-prep" in loud.stdout and "warning: lineage" in loud.stderr
    quiet = skyflow("-q", "run", "p.yaml", "--no-cache", env=unusable)
    assert quiet.returncode == 0, quiet.stderr
    assert "hello-from-prep" not in quiet.stdout and "prep succeeded" in quiet.stdout
    assert "warning" not in quiet.stderr
    both = skyflow("-v", "-q", "runs")
    assert both.returncode == 2 and "-v and -q do not go together" in both.stderr


def _complete(skyflow: Skyflow, line: str) -> list[str]:
    words = line.split(" ")
    env = {"_SKYFLOW_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    result = skyflow(env=env)
    assert result.returncode == 0, result.stderr
    return [row.split(",", 1)[1] for row in result.stdout.splitlines() if "," in row]


def test_completion_offers_pipeline_files_and_run_ids(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    skyflow.write("flows/train.py", "")
    skyflow.write("notes.txt", "")
    assert skyflow("run", "p.yaml", "--no-lineage", "--run-id", "done-1").returncode == 0
    assert skyflow("run", "p.yaml", "--no-lineage", "--run-id", "done-2").returncode == 0
    assert _complete(skyflow, "skyflow run ") == ["flows/", "p.yaml"]
    assert _complete(skyflow, "skyflow plan flows/") == ["flows/train.py"]
    assert _complete(skyflow, "skyflow status done-") == ["done-2", "done-1"]
    assert _complete(skyflow, "skyflow logs d") == ["done-2", "done-1"]
    assert os.environ.get("_SKYFLOW_COMPLETE") is None


def test_lineage_of_a_copied_out_folder_finds_its_run(skyflow: Skyflow) -> None:
    skyflow.write("o.yaml", "name: o\nstages:\n  make:\n    run: echo made > $SKYFLOW_OUTPUT_DATA/d.txt\n"
                  "    outputs: [data]\n")
    assert skyflow("run", "o.yaml", "--run-id", "copied").returncode == 0
    assert skyflow("artifacts", "get", "copied", "make.data", "here").returncode == 0
    traced = skyflow("lineage", "here")
    assert traced.returncode == 0, traced.stderr
    assert "made by stage make (run copied" in traced.stdout
