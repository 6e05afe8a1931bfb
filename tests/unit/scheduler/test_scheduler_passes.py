"""One scheduler pass on a real state DB with a hand-moved clock and a launcher that only records: standing by,
broken and paused schedules, fires a crashed scheduler left, inputs that cannot be polled, a lease lost
mid-pass, runs that cannot start or will not stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from skyflow.errors import SchedulerError
from skyflow.scheduler.daemon import Scheduler, stop_on_signals
from skyflow.scheduler.decisions import Fingerprint, Fire, tick_key
from skyflow.scheduler.store import FireRow, ScheduleRecord, ScheduleStore

HOUR = 3600.0
T0 = 1_750_000_000.0 - 1_750_000_000.0 % HOUR  # on the hour, UTC


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingLauncher:
    """Starts nothing: records what the scheduler asked, answers as told."""

    outcomes: dict[str, str | None] = field(default_factory=dict)
    start_error: str | None = None
    cancel_result: str = "cancelled"
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def start(self, record: ScheduleRecord, fire: FireRow) -> tuple[int, str]:
        if self.start_error:
            raise SchedulerError(self.start_error)
        self.started.append(fire.run_id)
        return 4242, f"/logs/{fire.run_id}.log"

    def outcome(self, fire: FireRow) -> str | None:
        return self.outcomes.get(fire.run_id)

    def cancel(self, fire: FireRow, timeout_s: float = 30.0) -> str:
        self.cancelled.append(fire.run_id)
        return self.cancel_result


def hourly(name: str = "hourly", **changes: object) -> ScheduleRecord:
    record = ScheduleRecord(name=name, target=f"/p/{name}.yaml", pipeline=name, cron="0 * * * *", timezone="UTC",
                            on_change=(), concurrency="forbid", catchup="latest", params={}, run_args=())
    return replace(record, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> ScheduleStore:
    return ScheduleStore(tmp_path / "state.db")


def scheduler(store: ScheduleStore, launcher: RecordingLauncher, clock: Clock, **options: float) -> Scheduler:
    return Scheduler(store, launcher, clock=clock, owner="me", **options)


def test_a_standby_scheduler_says_once_that_another_holds_the_lease(
        store: ScheduleStore, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    store.acquire_lease("other", 1, "host-b", clock.now, 60)
    standby = scheduler(store, RecordingLauncher(), clock)
    with caplog.at_level(logging.INFO, logger="skyflow.scheduler"):
        assert not standby.tick().leader
        clock.now += 10
        assert not standby.tick().leader
    assert caplog.text.count("another scheduler holds the lease (other, pid 1 on host-b); standing by") == 1


def test_a_broken_schedule_is_logged_and_the_others_still_fire(
        store: ScheduleStore, caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly("broken", cron="61 * * * *"), T0 - 60)
    store.save(hourly("good"), T0 - 60)
    launcher = RecordingLauncher()
    with caplog.at_level(logging.ERROR, logger="skyflow.scheduler"):
        report = scheduler(store, launcher, Clock(T0 + 1)).tick()
    assert "schedule broken: not a valid cron expression: '61 * * * *'" in caplog.text
    assert [s.schedule for s in report.started] == ["good"] and len(launcher.started) == 1


def test_a_paused_schedule_fires_nothing_but_its_ended_runs_are_still_settled(store: ScheduleStore) -> None:
    store.save(hourly(), T0 - 2 * HOUR)
    store.acquire_lease("me", 1, "h", T0 - HOUR, 60)
    (fire,) = store.claim("me", "hourly", (Fire(tick_key(T0 - HOUR), "cron", T0 - HOUR),), T0 - HOUR, T0 - HOUR)
    store.mark_started("hourly", fire.fire_key, 4242, "/logs/x.log")
    store.set_paused("hourly", True, T0 - HOUR)
    launcher = RecordingLauncher(outcomes={fire.run_id: "succeeded"})

    report = scheduler(store, launcher, Clock(T0 + 1)).tick()

    assert report.started == [] and launcher.started == []
    assert report.ended == [(fire.run_id, "succeeded")]
    assert store.fire("hourly", fire.fire_key).outcome == "succeeded"


def test_a_fire_a_crashed_scheduler_claimed_but_never_started_is_started_by_the_next(
        store: ScheduleStore, caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly(), T0 - 60)
    store.acquire_lease("crashed", 1, "h", T0, 5)
    (fire,) = store.claim("crashed", "hourly", (Fire(tick_key(T0), "cron", T0),), T0, T0)
    launcher = RecordingLauncher()
    clock = Clock(T0 + 10)
    successor = scheduler(store, launcher, clock, adopt_after_s=30)
    assert successor.tick().started == [] and launcher.started == []  # claimed just now: it may still start it
    clock.now = T0 + 31
    with caplog.at_level(logging.INFO, logger="skyflow.scheduler"):
        report = successor.tick()

    assert launcher.started == [fire.run_id]
    assert [s.run_id for s in report.started] == [fire.run_id]
    assert f"starting run {fire.run_id}, claimed by crashed but never started" in caplog.text
    started = store.fire("hourly", fire.fire_key)
    assert (started.state, started.pid, started.log_path) == ("started", 4242, f"/logs/{fire.run_id}.log")


def test_an_input_that_cannot_be_polled_is_warned_about_once_and_its_return_is_told(
        store: ScheduleStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly(cron=None, on_change=(("raw", "s3://bucket/raw"),)), T0)
    store.save_fingerprint(None, "hourly", "raw", "s3://bucket/raw", Fingerprint("m1", "d1"), T0)
    answers: list[object] = [SchedulerError("cannot read s3://bucket/raw: NoCredentialsError")] * 2 + [
        (Fingerprint("m1", "d1"), False)]

    def observe(uri: str, old: Fingerprint | None) -> tuple[Fingerprint, bool]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    monkeypatch.setattr("skyflow.scheduler.daemon.observe", observe)
    clock = Clock(T0)
    loop = scheduler(store, RecordingLauncher(), clock, poll_s=10)
    with caplog.at_level(logging.INFO, logger="skyflow.scheduler"):
        for _ in range(3):
            loop.tick()
            clock.now += 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["schedule hourly: cannot poll raw: cannot read s3://bucket/raw: NoCredentialsError"]
    assert "schedule hourly: raw can be polled again" in caplog.text


def test_an_input_seen_for_the_first_time_is_a_baseline_not_a_change(
        store: ScheduleStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "raw.txt"
    data.write_text("v1")
    store.save(hourly(cron=None, on_change=(("raw", str(data)),)), T0)
    launcher = RecordingLauncher()
    with caplog.at_level(logging.INFO, logger="skyflow.scheduler"):
        report = scheduler(store, launcher, Clock(T0 + 1)).tick()
    assert f"schedule hourly: watching raw ({data})" in caplog.text
    assert report.started == [] and report.content_reads == ["raw"]
    assert store.fingerprints("hourly")["raw"].digest is not None and store.get("hourly").pending_change is None


def test_more_missed_ticks_than_considered_are_warned_about(
        store: ScheduleStore, caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly(cron="* * * * *"), T0 - 10 * HOUR)
    launcher = RecordingLauncher()
    with caplog.at_level(logging.WARNING, logger="skyflow.scheduler"):
        report = scheduler(store, launcher, Clock(T0)).tick()
    assert "more than 100 ticks were missed; only the newest 100 are considered" in caplog.text
    assert len(launcher.started) == 1 and len(report.skipped) == 99


def test_a_run_that_will_not_stop_when_replaced_stays_open(store: ScheduleStore) -> None:
    store.save(hourly(concurrency="replace"), T0 - 2 * HOUR)
    store.acquire_lease("me", 1, "h", T0 - HOUR, 60)
    (old,) = store.claim("me", "hourly", (Fire(tick_key(T0 - HOUR), "cron", T0 - HOUR),), T0 - HOUR, T0 - HOUR)
    store.mark_started("hourly", old.fire_key, 4242, "/logs/old.log")
    launcher = RecordingLauncher(cancel_result="still running after 30 s")

    report = scheduler(store, launcher, Clock(T0 + 1)).tick()

    assert report.cancelled == [old.run_id] and launcher.cancelled == [old.run_id]
    assert store.fire("hourly", old.fire_key).state == "started"  # its end is settled on a later pass
    assert len(launcher.started) == 1 and launcher.started[0] != old.run_id


def test_a_scheduler_that_loses_the_lease_mid_pass_records_and_starts_nothing(
        store: ScheduleStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly(on_change=(("raw", str(tmp_path / "raw")),)), T0 - 60)
    clock = Clock(T0 + 1)

    def observe_while_another_takes_over(uri: str, old: Fingerprint | None) -> tuple[Fingerprint, bool]:
        store.release_lease("me")
        assert store.acquire_lease("other", 2, "host-b", clock.now, 60)
        return Fingerprint("m", "d"), True

    monkeypatch.setattr("skyflow.scheduler.daemon.observe", observe_while_another_takes_over)
    launcher = RecordingLauncher()
    with caplog.at_level(logging.WARNING, logger="skyflow.scheduler"):
        report = scheduler(store, launcher, clock).tick()

    assert "schedule hourly: lost the lease or the fire was taken; not starting" in caplog.text
    assert report.started == [] and launcher.started == [] and store.fires("hourly") == []
    assert store.fingerprints("hourly") == {}


def test_a_run_that_cannot_be_started_ends_its_fire_with_the_reason(
        store: ScheduleStore, caplog: pytest.LogCaptureFixture) -> None:
    store.save(hourly(), T0 - 60)
    launcher = RecordingLauncher(start_error="cannot start run x: [Errno 2] No such file")
    with caplog.at_level(logging.ERROR, logger="skyflow.scheduler"):
        report = scheduler(store, launcher, Clock(T0 + 1)).tick()
    (fire,) = store.fires("hourly")
    assert (fire.state, fire.outcome) == ("ended", "not started: cannot start run x: [Errno 2] No such file")
    assert report.started == []
    assert "schedule hourly: cannot start run x" in caplog.text


class _NotingEvent(threading.Event):
    """An Event that says when the scheduler's loop has gone to sleep on it."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if threading.current_thread() is threading.main_thread():
            self.asleep.set()
        return super().wait(timeout)


def test_a_sigterm_another_thread_receives_stops_the_scheduler_without_waiting_for_its_next_pass(
        store: ScheduleStore) -> None:
    """Python runs signal handlers in the main thread; the kernel may hand the signal to any thread (the
    main one blocks them all while `subprocess` starts a run). The loop's wait until its next pass must
    not keep the main thread asleep through it."""
    stop, watchdog_fired = _NotingEvent(), []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals(stop)

    def elsewhere() -> None:
        if stop.asleep.wait(60):
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        if not stop.wait(60):  # the pass would sleep 10 minutes: fail instead
            watchdog_fired.append(True)
            stop.set()

    try:
        sched = Scheduler(store, RecordingLauncher(), clock=time.time, owner="me", poll_s=600, lease_ttl_s=3600)
        threading.Thread(target=elsewhere, daemon=True).start()
        sched.serve(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert not watchdog_fired, "the SIGTERM was acted on only once the wait ended"
