"""The scheduler loop: hold the lease, poll watched inputs, decide, claim, launch, log.

Decisions come from `skyflow.scheduler.decisions` (pure); this module only does the I/O around
them, with the clock injected so tests move time by hand.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from skyflow.errors import SkyflowError
from skyflow.scheduler.decisions import DEFAULT_GRACE_S, Decision, change_reason, decide
from skyflow.scheduler.store import FireRow, ScheduleRecord, ScheduleStore
from skyflow.scheduler.timing import format_tick, next_tick
from skyflow.scheduler.watch import observe
from skyflow.signals import act_on_signals, wait_awake

log = logging.getLogger("skyflow.scheduler")


class Launcher(Protocol):
    """Starts a fire's run and follows it (`RunLauncher` runs `skyflow run` processes)."""

    def start(self, record: ScheduleRecord, fire: FireRow) -> tuple[int, str]: ...

    def outcome(self, fire: FireRow) -> str | None: ...

    def cancel(self, fire: FireRow, timeout_s: float = 30.0) -> str: ...


@dataclass(frozen=True)
class Started:
    schedule: str
    run_id: str
    reason: str


@dataclass
class TickReport:
    """What one pass did; the loop logs it, tests assert on it."""

    leader: bool = True
    started: list[Started] = field(default_factory=list)
    skipped: list[tuple[str, float]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    content_reads: list[str] = field(default_factory=list)


@dataclass
class Scheduler:
    store: ScheduleStore
    launcher: Launcher
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    lease_ttl_s: float = 60.0
    poll_s: float = 30.0  # how often watched inputs are probed
    grace_s: float = DEFAULT_GRACE_S
    adopt_after_s: float = 30.0  # a fire claimed but not started this long ago was orphaned by a crash

    def __post_init__(self) -> None:
        self._polled_at: dict[str, float] = {}
        # (schedule, input) -> the last "cannot poll" told: the same one is not repeated on every poll
        self._poll_problems: dict[tuple[str, str], str] = {}
        self._was_leader: bool | None = None

    # -- one pass -----------------------------------------------------------------------------
    def tick(self) -> TickReport:
        now = self.clock()
        if not self.store.acquire_lease(self.owner, os.getpid(), socket.gethostname(), now, self.lease_ttl_s):
            if self._was_leader is not False:
                held = self.store.lease() or {}
                log.info("another scheduler holds the lease (%s, pid %s on %s); standing by",
                         held.get("owner"), held.get("pid"), held.get("host"))
            self._was_leader = False
            return TickReport(leader=False)
        if self._was_leader is not True:
            log.info("holding the scheduler lease as %s", self.owner)
        self._was_leader = True
        report = TickReport()
        for record in self.store.schedules():
            try:
                self._pass(record, now, report)
            except SkyflowError as exc:
                log.error("schedule %s: %s", record.name, exc)
        return report

    def _pass(self, record: ScheduleRecord, now: float, report: TickReport) -> None:
        open_fires = self._settle(record, now, report)
        if record.paused:
            return
        if record.on_change and now - self._polled_at.get(record.name, float("-inf")) >= self.poll_s:
            self._poll(record, now, report)
            record = self.store.get(record.name)
        decision = decide(record.view(), now, len(open_fires), grace_s=self.grace_s)
        self._apply(record, decision, open_fires, now, report)

    def _settle(self, record: ScheduleRecord, now: float, report: TickReport) -> list[FireRow]:
        """End fires whose runs are over; start fires a crashed scheduler claimed; return those still open."""
        still_open = []
        for fire in self.store.fires(record.name, open_only=True):
            if fire.state == "claimed":
                if fire.owner == self.owner or now - fire.claimed_at < self.adopt_after_s:
                    still_open.append(fire)
                    continue
                log.info("schedule %s: starting run %s, claimed by %s but never started", record.name,
                         fire.run_id, fire.owner)
                self._start(record, fire, report)
                still_open.append(self.store.fire(record.name, fire.fire_key))
                continue
            outcome = self.launcher.outcome(fire)
            if outcome is None:
                still_open.append(fire)
                continue
            self.store.mark_ended(record.name, fire.fire_key, outcome, now)
            report.ended.append((fire.run_id, outcome))
            log.info("schedule %s: run %s %s", record.name, fire.run_id, outcome)
        return still_open

    def _poll(self, record: ScheduleRecord, now: float, report: TickReport) -> None:
        self._polled_at[record.name] = now
        seen = self.store.fingerprints(record.name)
        for ref, uri in record.on_change:
            try:
                fingerprint, read = observe(uri, seen.get(ref))
            except SkyflowError as exc:
                told = self._poll_problems.get((record.name, ref))
                self._poll_problems[(record.name, ref)] = str(exc)
                (log.debug if told == str(exc) else log.warning)("schedule %s: cannot poll %s: %s",
                                                                  record.name, ref, exc)
                continue
            if self._poll_problems.pop((record.name, ref), None) is not None:
                log.info("schedule %s: %s can be polled again", record.name, ref)
            if read:
                report.content_reads.append(ref)
            if fingerprint == seen.get(ref):
                continue
            reason = change_reason(seen.get(ref), fingerprint, ref)
            self.store.save_fingerprint(self.owner, record.name, ref, uri, fingerprint, now, change=reason)
            if reason:
                log.info("schedule %s: %s", record.name, reason)
            elif ref not in seen:
                log.info("schedule %s: watching %s (%s)", record.name, ref, uri)

    def _apply(self, record: ScheduleRecord, decision: Decision, open_fires: list[FireRow], now: float,
               report: TickReport) -> None:
        for note in decision.notes:
            log.warning("schedule %s: %s", record.name, note)
        for tick in decision.skipped_ticks:
            report.skipped.append((record.name, tick))
            log.info("schedule %s: skipped the %s tick (catchup: %s, concurrency: %s)", record.name,
                     format_tick(tick, record.timezone), record.catchup, record.concurrency)
        if decision.waiting:
            report.waiting.append((record.name, decision.waiting))
            log.debug("schedule %s: %s", record.name, decision.waiting)
        if decision.cancel_active:
            for fire in open_fires:
                log.info("schedule %s: cancelling run %s (concurrency: replace)", record.name, fire.run_id)
                result = self.launcher.cancel(fire)
                outcome = "cancelled" if result == "cancelled" else self.launcher.outcome(fire)
                if outcome is not None:
                    self.store.mark_ended(record.name, fire.fire_key, outcome, now)
                report.cancelled.append(fire.run_id)
        if not decision.fires and decision.watermark_s is None:
            return
        claimed = self.store.claim(self.owner, record.name, decision.fires, decision.watermark_s, now)
        if decision.fires and not claimed:
            log.warning("schedule %s: lost the lease or the fire was taken; not starting", record.name)
        for fire in claimed:
            self._start(record, fire, report)

    def _start(self, record: ScheduleRecord, fire: FireRow, report: TickReport) -> None:
        try:
            pid, log_path = self.launcher.start(record, fire)
        except SkyflowError as exc:
            self.store.mark_ended(record.name, fire.fire_key, f"not started: {exc}", self.clock())
            log.error("schedule %s: %s", record.name, exc)
            return
        self.store.mark_started(record.name, fire.fire_key, pid, log_path)
        report.started.append(Started(record.name, fire.run_id, fire.reason))
        log.info("schedule %s: started run %s (%s), pid %d, log %s", record.name, fire.run_id, fire.reason, pid,
                 log_path)

    # -- the loop -----------------------------------------------------------------------------
    def next_wake(self, now: float) -> float:
        """When the next pass is needed: the next cron tick, or the next poll/heartbeat."""
        wake = now + min(self.poll_s, self.lease_ttl_s / 3)
        for record in self.store.schedules():
            if record.cron and not record.paused:
                wake = min(wake, next_tick(record.cron, record.timezone, now))
        return wake

    def serve(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set (SIGTERM, SIGINT); then give the lease back."""
        log.info("scheduler started (state %s)", self.store.path)
        try:
            while not stop.is_set():
                self.tick()
                now = self.clock()
                wait_awake(stop, max(0.0, min(self.next_wake(now) - now, self.poll_s)) + 0.01)
        finally:
            self.store.release_lease(self.owner)
            log.info("scheduler stopped; runs it started keep running")


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT end the loop after the current pass (noted by the handler, acted on by a
    watcher thread: see `skyflow.signals`)."""
    def stopping(signum: signal.Signals) -> None:
        log.info("received %s; stopping", signum.name)
        stop.set()

    act_on_signals((signal.SIGTERM, signal.SIGINT), stopping, name="skyflow-scheduler-signals", done=stop)
