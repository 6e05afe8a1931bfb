"""`skyflow run --dry-run | --detach`, `status` of a failed run and `logs --tail` in-process: what is printed,
which command a detached run starts, and options that go together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skyflow.cli.run_commands import _rotated
from skyflow.runner.state import RunStore
from tests.unit.cli.cli_helpers import run

PIPELINE = """\
name: two
stages:
  prep: {run: 'echo prep', outputs: [rows]}
  train: {run: 'echo train', inputs: {rows: prep.rows}, outputs: [model]}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE)
    return tmp_path


def test_output_without_dry_run_is_a_usage_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["run", "p.yaml", "--output", "launched"], capsys)
    assert code == 2 and "--output goes with --dry-run" in err
    assert not (workdir / "launched").exists() and not (workdir / "home" / "state.db").exists()


def test_a_dry_run_prints_what_each_stage_would_launch(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["run", "p.yaml", "--dry-run", "--infra", "local"], capsys)
    assert code == 0
    assert "--- # prep on local (local)\n# setup\n\n# run\necho prep\n" in out
    assert "--- # train on local (local)\n# setup\n\n# run\necho train\n" in out
    assert "wrote" not in out and not (workdir / "home" / "state.db").exists()


def test_a_dry_run_forced_onto_a_cluster_is_not_priced(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["run", "p.yaml", "--dry-run", "--infra", "kubernetes/lab"], capsys)
    assert code == 0
    assert out.startswith("every stage placed on kubernetes/lab (--infra); not priced\n")
    assert "--- # prep on kubernetes/lab (kubernetes)" in out and "kind: Job" in out


def test_a_detached_run_restarts_the_same_command_in_the_background(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    started: list[dict[str, Any]] = []

    class Started:
        pid = 4242

        def __init__(self, args: list[str], **kwargs: Any) -> None:
            started.append({"args": args, **kwargs})

    monkeypatch.setattr(subprocess, "Popen", Started)
    monkeypatch.setattr(sys, "argv", ["skyflow", "run", "p.yaml", "--detach", "-y", "--infra", "local"])
    code, out, _ = run(["run", "p.yaml", "--detach", "-y", "--infra", "local"], capsys)
    assert code == 0 and len(started) == 1
    args = started[0]["args"]
    assert args[:3] == [sys.executable, "-m", "skyflow"]
    run_id = args[args.index("--run-id") + 1]
    assert args[3:] == ["run", "p.yaml", "-y", "--infra", "local", "--run-id", run_id]
    assert run_id.startswith("two-")
    assert started[0]["stdin"] == subprocess.DEVNULL and started[0]["start_new_session"] is True
    log = workdir / "home" / "runs" / run_id / "runner.log"
    assert out.startswith(f"run {run_id} started in the background (pid 4242); its output: {log}\n")
    assert log.parent.is_dir()


def failed_run(home: Path, log: Path | None) -> RunStore:
    state = RunStore(home / "state.db")
    state.create_run("r1", "two", "p.yaml", "d", {}, {"lineage": False}, None, ["prep"], None)
    state.start_attempt("r1", "prep", 1, str(log or home / "runs" / "r1" / "prep" / "attempt-1" / "stage.log"))
    state.finish_stage("r1", "prep", "failed", {}, message="exit code 3")
    state.set_run("r1", state="failed", runner_pid=None)
    return state


def test_status_of_a_failed_stage_shows_its_last_lines(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = workdir / "prep.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 11)))
    failed_run(workdir / "home", log)
    code, out, _ = run(["status", "r1"], capsys)
    assert code == 1
    assert f"last lines of prep ({log}):" in out
    assert "  line 3\n" in out and "  line 10\n" in out and "  line 2\n" not in out
    assert "lineage: not recorded (the run had --no-lineage)" in out


def test_status_of_a_failed_stage_whose_log_is_gone_shows_the_table_only(workdir: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    failed_run(workdir / "home", None)
    code, out, _ = run(["status", "r1"], capsys)
    assert code == 1
    assert "run r1: failed" in out and "exit code 3" in out and "last lines of" not in out


def test_logs_tail_prints_only_the_last_lines(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = workdir / "prep.log"
    log.write_text("first\nsecond\nthird\n")
    failed_run(workdir / "home", log)
    assert run(["logs", "r1", "prep", "--tail", "1"], capsys)[:2] == (1, "third\n")
    assert run(["logs", "r1", "prep", "--tail", "0"], capsys)[:2] == (1, "")
    assert run(["logs", "r1", "prep"], capsys)[:2] == (1, "first\nsecond\nthird\n")


def test_a_log_moved_aside_and_not_yet_recreated_is_no_rotation(tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    log.write_text("x\n")
    with open(log, "rb") as f:
        assert not _rotated(log, f)
        log.rename(tmp_path / "stage.log.1")
        assert not _rotated(log, f)
        log.write_text("new\n")
        assert _rotated(log, f)
