"""Ending a stage's processes when they ignore SIGTERM, leaving alone a pid that names another process,
and what liveness checks fall back to on a machine without /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow import processes
from skyflow.processes import (
    STAGE_TOKEN_VARIABLE,
    _signal,
    attempt_token,
    end_processes_with_token,
    group_alive,
    kill_process_groups,
    new_stage_token,
    process_start,
    processes_with_token,
    same_process,
)

STUBBORN = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(120)")


@pytest.fixture
def token() -> str:
    return new_stage_token()


@pytest.fixture
def stubborn(token: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process leading its own group, carrying a stage token, that ignores SIGTERM; up once it said so."""
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, STAGE_TOKEN_VARIABLE: token})
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(stubborn: subprocess.Popen[bytes],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 0.1)
    kill_process_groups([stubborn.pid], own=[stubborn], starts={stubborn.pid: process_start(stubborn.pid)})
    assert stubborn.wait() == -signal.SIGKILL


def test_a_token_process_that_ignores_sigterm_is_killed_and_counted(stubborn: subprocess.Popen[bytes],
                                                                    token: str) -> None:
    assert processes_with_token(token) == {stubborn.pid: process_start(stubborn.pid)}
    assert end_processes_with_token(token, grace_s=0.05) == 1
    assert stubborn.wait() == -signal.SIGKILL
    assert processes_with_token(token) == {}
    assert end_processes_with_token(None) == 0


def test_a_pid_that_now_names_another_process_is_not_signalled(stubborn: subprocess.Popen[bytes]) -> None:
    _signal(stubborn.pid, "another-boot:12345", signal.SIGKILL)
    assert stubborn.poll() is None and same_process(stubborn.pid, process_start(stubborn.pid))
    _signal(stubborn.pid, process_start(stubborn.pid), signal.SIGKILL)
    assert stubborn.wait() == -signal.SIGKILL


def test_without_proc_liveness_alone_decides(stubborn: subprocess.Popen[bytes], token: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(path: object, *args: object, **kwargs: object) -> object:
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "listdir", no_proc)  # the os module skyflow.processes uses
    monkeypatch.setattr(processes, "open", no_proc, raising=False)
    processes._boot_id.cache_clear()
    try:
        assert process_start(stubborn.pid) is None
        assert same_process(stubborn.pid, None)
        assert group_alive(stubborn.pid)  # no /proc to tell zombies apart: a group that answers is alive
        assert processes_with_token(token) == {}  # no environments to read: nothing is found
    finally:
        processes._boot_id.cache_clear()


def test_killing_returns_once_a_group_that_ignored_sigterm_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE_S", 0.1)
    for _ in range(5):  # the caller (`skyflow ui` freeing its port) goes on as soon as this returns
        child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        kill_process_groups([child.pid])  # not our Popen to reap: only SIGKILL's effect is awaited
        assert not group_alive(child.pid)
        assert child.wait() == -signal.SIGKILL


def test_an_attempts_token_is_its_log_paths_and_no_other_attempts(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "runs" / "r1" / "train" / "attempt-1" / "stage.log"
    monkeypatch.chdir(tmp_path)
    assert attempt_token(log) == attempt_token(str(log)) == attempt_token(Path("runs/r1/train/attempt-1/stage.log"))
    others = {attempt_token(tmp_path / "runs" / run / stage / f"attempt-{n}" / "stage.log")
              for run in ("r1", "r2") for stage in ("train", "eval") for n in (1, 2)}
    assert len(others) == 8 and attempt_token(log) in others
    assert all(len(t) == len(new_stage_token()) and t.isalnum() for t in others)
