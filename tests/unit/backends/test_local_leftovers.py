"""What a runner that died between starting a local stage (or service) and recording it leaves: only the
attempt's log path. A new runner's backend ends the attempt's processes from that path alone, and
nothing of another attempt."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from skyflow.backends.base import Capacity, Leftover
from skyflow.backends.fake import launch_for
from skyflow.backends.local import LocalBackend
from skyflow.processes import attempt_token, processes_with_token


def _backend() -> LocalBackend:
    return LocalBackend(Capacity(cpus=2, memory_gb=4, gpus={}, max_parallel=2), gpu_devices={})


def _started(log: Path) -> None:
    deadline = time.monotonic() + 30
    while "started" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(0.05)


def test_an_attempt_nobody_recorded_is_ended_from_its_log_path(tmp_path: Path) -> None:
    # a child that leaves the stage's process group too: only the token finds it
    launch = launch_for(tmp_path, "setsid sleep 60 & sleep 60 & echo started; wait")
    handle = _backend().launch(launch)
    _started(launch.log_path)
    token = attempt_token(launch.log_path)
    assert len(processes_with_token(token)) >= 3
    _backend().abandon(Leftover((), None, str(launch.log_path)))  # a new runner's backend: no groups, no handle
    assert processes_with_token(token) == {}
    assert not handle.wait().ok


def test_an_unrecorded_service_is_ended_from_its_log_path(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "echo started; exec sleep 60", spec={"service": {"readiness_probe": "/"}})
    service = _backend().serve(launch)
    _started(launch.log_path)
    token = attempt_token(launch.log_path)
    assert processes_with_token(token)
    _backend().abandon(Leftover((), None, str(launch.log_path)))
    assert processes_with_token(token) == {}
    service.stop()


def test_another_attempts_log_path_ends_nothing_of_this_one(tmp_path: Path) -> None:
    first = launch_for(tmp_path, "echo started; exec sleep 60")
    second = replace(first, attempt=2, log_path=tmp_path / "attempt-2" / "stage.log")
    handle = _backend().launch(first)
    _started(first.log_path)
    try:
        _backend().abandon(Leftover((), None, str(second.log_path)))
        assert processes_with_token(attempt_token(first.log_path))
    finally:
        handle.cancel()
        handle.wait()
