"""Starting, following and stopping a fired run; watched inputs that are gone or that the storage library
cannot read; schedules that cannot be built; adding again and triggering by hand under each policy."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec  # noqa: F401  its registry module is patched below
import pytest
from fsspec.spec import AbstractFileSystem

from skyflow.errors import RunError, SchedulerError
from skyflow.scheduler import add_schedule, schedule_from_pipeline, trigger_now
from skyflow.scheduler.decisions import MISSING, Fingerprint
from skyflow.scheduler.launch import RunLauncher
from skyflow.scheduler.store import FireRow, ScheduleRecord, ScheduleStore
from skyflow.scheduler.watch import content_digest, observe, probe_meta

RECORD = ScheduleRecord(name="nightly", target="/nowhere/nightly.yaml", pipeline="nightly", cron="0 3 * * *",
                        timezone="UTC", on_change=(), concurrency="forbid", catchup="latest", params={}, run_args=())


def fire_row(pid: int | None, run_id: str = "nightly-cron-1") -> FireRow:
    return FireRow("nightly", "cron:1", run_id, "cron", 1.0, 1.0, "me", "started", pid, None, None, None)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- launch ---------------------------------------------------------------------------------------

def test_a_run_whose_interpreter_is_gone_is_a_scheduler_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv-removed" / "python"))
    launcher = RunLauncher(tmp_path / "logs", lambda run_id: None, lambda run_id, timeout: "cancelled")
    with pytest.raises(SchedulerError, match=r"^cannot start run nightly-cron-1: .*venv-removed/python"):
        launcher.start(RECORD, fire_row(None))


def test_how_a_fire_ended_is_read_from_the_runner_then_from_its_processes(tmp_path: Path) -> None:
    import os

    states: dict[str, tuple[str, int | None]] = {}
    launcher = RunLauncher(tmp_path, states.get, lambda run_id, timeout: "cancelled")
    gone = dead_pid()
    assert launcher.outcome(fire_row(gone)) == "not started (see its log)"
    assert launcher.outcome(fire_row(os.getpid())) is None  # still planning: no run state yet
    states["nightly-cron-1"] = ("running", gone)
    assert launcher.outcome(fire_row(gone)) == "died"
    states["nightly-cron-1"] = ("running", os.getpid())
    assert launcher.outcome(fire_row(gone)) is None
    states["nightly-cron-1"] = ("failed", None)
    assert launcher.outcome(fire_row(gone)) == "failed"


def test_cancelling_goes_through_the_runner_and_a_run_that_ended_meanwhile_says_so(tmp_path: Path) -> None:
    asked: list[tuple[str, float]] = []

    def cancel_run(run_id: str, timeout_s: float) -> str:
        asked.append((run_id, timeout_s))
        if run_id == "ended-run":
            raise RunError("run ended-run already succeeded")
        return "cancelled"

    launcher = RunLauncher(tmp_path, lambda run_id: ("running", None), cancel_run)
    assert launcher.cancel(fire_row(None), timeout_s=5) == "cancelled"
    assert launcher.cancel(fire_row(None, "ended-run")) == "run ended-run already succeeded"
    assert asked == [("nightly-cron-1", 5), ("ended-run", 30.0)]


def test_a_run_still_planning_is_terminated_and_killed_if_it_ignores_the_signal(tmp_path: Path) -> None:
    import signal

    ready = tmp_path / "ready"
    stubborn = ("import pathlib, signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "pathlib.Path(sys.argv[1]).touch()\n"
                "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", stubborn, str(ready)], start_new_session=True)
    try:
        while not ready.exists():
            assert proc.poll() is None
            time.sleep(0.01)
        launcher = RunLauncher(tmp_path, lambda run_id: None, lambda run_id, timeout: "unused")

        assert launcher.cancel(fire_row(proc.pid), timeout_s=0.2) == "cancelled"
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert launcher.cancel(fire_row(proc.pid)) == "ended"
        assert launcher.cancel(fire_row(None)) == "ended"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- watch ----------------------------------------------------------------------------------------

class BrokenFS(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """A storage library whose every call fails the way a missing credential does."""

    protocol = "brokenfs"
    failing = {"info", "find", "isdir"}

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        if "info" in self.failing:
            raise RuntimeError("NoCredentialsError: Unable to locate credentials")
        return {"name": path, "type": "directory", "size": 0}

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("AccessDenied: ListObjectsV2")

    def isdir(self, path: str) -> bool:
        raise RuntimeError("NoCredentialsError: Unable to locate credentials")


class UnconfiguredFS(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    protocol = "unconfiguredfs"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no endpoint configured for this store")


@pytest.fixture
def broken_storage(monkeypatch: pytest.MonkeyPatch) -> type[BrokenFS]:
    implementations = sys.modules["fsspec.registry"]._registry
    monkeypatch.setitem(implementations, "brokenfs", BrokenFS)
    monkeypatch.setitem(implementations, "unconfiguredfs", UnconfiguredFS)
    monkeypatch.setattr(BrokenFS, "failing", set(BrokenFS.failing))
    return BrokenFS


def test_a_watched_input_that_is_gone_is_missing_not_an_error(tmp_path: Path) -> None:
    gone = str(tmp_path / "raw.jsonl")
    assert probe_meta(gone) == MISSING
    assert content_digest(gone) == MISSING  # removed between the metadata and the read
    assert observe(gone, Fingerprint("t=1;size=3;ino=7", "sha256:ab")) == (Fingerprint(MISSING, MISSING), False)


def test_what_a_storage_library_raises_becomes_one_error_naming_the_input(broken_storage: type[BrokenFS]) -> None:
    advice = "; check the credentials and the location (`skyflow check`)"
    with pytest.raises(SchedulerError) as info:
        probe_meta("brokenfs://bucket/raw")
    assert str(info.value) == ("cannot read metadata of brokenfs://bucket/raw: RuntimeError: NoCredentialsError: "
                               "Unable to locate credentials" + advice)
    with pytest.raises(SchedulerError, match=r"^cannot read brokenfs://bucket/raw: RuntimeError: NoCredentials"):
        content_digest("brokenfs://bucket/raw")
    with pytest.raises(SchedulerError, match=r"^cannot watch unconfiguredfs://bucket/raw: RuntimeError: no endpoint"):
        probe_meta("unconfiguredfs://bucket/raw")
    broken_storage.failing.discard("info")  # the prefix can be seen, not listed
    with pytest.raises(SchedulerError, match=r"^cannot list brokenfs://bucket/raw: PermissionError: AccessDenied"):
        observe("brokenfs://bucket/raw", None)


# -- building, adding and triggering schedules ----------------------------------------------------

PIPELINE = """\
name: nightly
inputs: {raw_prompts: {uri: ./data/prompts.jsonl}}
stages:
  say: {run: 'echo hi > $SKYFLOW_OUTPUT_O/o.txt', outputs: [o]}
"""


def pipeline_file(tmp_path: Path, schedule: str = "") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "prompts.jsonl").write_text('{"p": 1}\n')
    path = tmp_path / "nightly.yaml"
    path.write_text(PIPELINE + schedule)
    return path


def test_a_schedule_is_refused_without_a_trigger_with_a_bad_policy_or_with_an_unknown_input(tmp_path: Path) -> None:
    path = str(pipeline_file(tmp_path))
    with pytest.raises(SchedulerError, match=r"has no schedule: block; give --cron '0 3 \* \* 1' and/or --on-change"):
        schedule_from_pipeline(path)
    with pytest.raises(SchedulerError,
                       match=r"(?s)nightly\.yaml: bad schedule: .*concurrency.*Input should be .forbid., .allow. or"):
        schedule_from_pipeline(path, cron="0 3 * * *", concurrency="sometimes")
    with pytest.raises(SchedulerError, match=r"^on_change: 'raw_prompt' is no input of nightly and no URI; "
                                             r"did you mean raw_prompts\?$"):
        schedule_from_pipeline(path, on_change=("raw_prompt",))
    with pytest.raises(SchedulerError, match=r"^on_change: 'zzz' is no input of nightly and no URI$"):
        schedule_from_pipeline(path, on_change=("zzz",))


def test_adding_a_schedule_again_keeps_the_baseline_its_changes_are_seen_against(tmp_path: Path) -> None:
    store = ScheduleStore(tmp_path / "state.db")
    record = schedule_from_pipeline(str(pipeline_file(tmp_path)), on_change=("raw_prompts",))
    add_schedule(store, record, 1000.0)
    baseline = store.fingerprints("nightly")["raw_prompts"]
    (tmp_path / "data" / "prompts.jsonl").write_text('{"p": 2}\n')

    add_schedule(store, record, 2000.0)

    assert store.fingerprints("nightly")["raw_prompts"] == baseline
    assert store.watched_uri("nightly", "raw_prompts") == str(tmp_path / "data" / "prompts.jsonl")
    assert store.watched_uri("nightly", "other") is None


@dataclass
class FakeLauncher:
    going: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def start(self, record: ScheduleRecord, fire: FireRow) -> tuple[int, str]:
        self.started.append(fire.run_id)
        self.going.add(fire.run_id)
        return 4242, f"/logs/{fire.run_id}.log"

    def outcome(self, fire: FireRow) -> str | None:
        return None if fire.run_id in self.going else "succeeded"

    def cancel(self, fire: FireRow, timeout_s: float = 30.0) -> str:
        self.cancelled.append(fire.run_id)
        self.going.discard(fire.run_id)
        return "cancelled"


@pytest.mark.parametrize("concurrency", ["forbid", "replace", "allow"])
def test_a_manual_trigger_honours_the_concurrency_policy(tmp_path: Path, concurrency: str) -> None:
    store = ScheduleStore(tmp_path / "state.db")
    store.save(ScheduleRecord(**{**RECORD.__dict__, "concurrency": concurrency}), 1000.0)
    launcher = FakeLauncher()
    first = trigger_now(store, launcher, "nightly", 2000.0)  # type: ignore[arg-type]
    assert (first.state, first.reason, first.pid) == ("started", "manual trigger", 4242)

    if concurrency == "forbid":
        with pytest.raises(SchedulerError, match=rf"has run {first.run_id} going \(concurrency: forbid\); wait for "
                                                 rf"it or `skyflow cancel {first.run_id}`"):
            trigger_now(store, launcher, "nightly", 2001.0)  # type: ignore[arg-type]
        assert launcher.started == [first.run_id]
        return
    second = trigger_now(store, launcher, "nightly", 2001.0)  # type: ignore[arg-type]
    assert launcher.cancelled == ([first.run_id] if concurrency == "replace" else [])
    assert launcher.started == [first.run_id, second.run_id]
    with pytest.raises(SchedulerError, match=r"a manual run was just started; try again"):
        trigger_now(store, launcher, "nightly", 2001.0)  # type: ignore[arg-type]
