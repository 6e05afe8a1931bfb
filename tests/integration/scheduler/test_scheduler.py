"""The scheduler loop on a real state DB, launching real `skyflow run` processes, with a hand-moved clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from skyflow.scheduler import Scheduler, add_schedule, schedule_from_pipeline
from tests.integration.scheduler.conftest import Home, clock_at, fields

HOURLY = """\
name: hourly
params: {word: hi}
stages:
  say:
    run: echo ${params.word} > $SKYFLOW_OUTPUT_O/o.txt
    outputs: [o]
schedule: {cron: "0 * * * *", timezone: Europe/Berlin, params: {word: scheduled}}
"""

BLOCKING = """\
name: blocking
stages:
  wait:
    run: while [ ! -f GO_FILE ]; do sleep 0.05; done; date +%s%N > $SKYFLOW_OUTPUT_O/t
    outputs: [o]
schedule: {cron: "0 * * * *", concurrency: replace}
"""


def _wait_running(home: Home, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while home.launcher.run_state(run_id) is None:
        assert time.monotonic() < deadline, f"run {run_id} never started"
        time.sleep(0.05)


def _add(home: Home, name: str, text: str, now: float, **options: str) -> None:
    path = home.write(name, text)
    add_schedule(home.store, schedule_from_pipeline(str(path), run_args=("--no-lineage",), **options), now)  # type: ignore[arg-type]


def test_cron_fires_once_per_tick_and_a_restart_neither_repeats_nor_loses_one(home: Home) -> None:
    clock = clock_at("2025-06-02T09:30:00+02:00")
    _add(home, "hourly.yaml", HOURLY, clock.now)
    first = Scheduler(home.store, home.launcher, clock=clock, lease_ttl_s=60)
    assert fields(first.tick()) == []  # nothing due before 10:00
    clock.advance(31 * 60)
    assert fields(first.tick()) == ["hourly-cron-20250602-080000"]
    assert fields(first.tick()) == []
    assert home.wait_runs() == {"hourly-cron-20250602-080000": "succeeded"}

    # The first scheduler dies holding its lease; a new one waits the lease out, then fires nothing twice.
    second = Scheduler(home.store, home.launcher, clock=clock, lease_ttl_s=60)
    assert not second.tick().leader
    clock.advance(61)
    assert second.tick().leader and fields(second.tick()) == []

    # Down across 11:00 and 12:00: catchup latest runs 12:00 and skips 11:00.
    clock.advance(2 * 3600)
    third = Scheduler(home.store, home.launcher, clock=clock, lease_ttl_s=60)
    report = third.tick()
    assert fields(report) == ["hourly-cron-20250602-100000"]
    assert [tick for _, tick in report.skipped] == [clock_at("2025-06-02T11:00:00+02:00").now]
    home.wait_runs()
    # Same code, params and inputs as the 10:00 run: the stage is a verified cache hit.
    assert home.stages("hourly-cron-20250602-100000") == {"say": "cached"}


def test_two_schedulers_racing_fire_a_tick_once_and_a_lapsed_lease_cannot_claim(home: Home) -> None:
    clock = clock_at("2025-06-02T09:59:00+02:00")
    _add(home, "hourly.yaml", HOURLY, clock.now)
    clock.advance(120)
    racers = [Scheduler(home.store, home.launcher, clock=clock) for _ in range(4)]
    barrier = threading.Barrier(len(racers))
    reports = []

    def race(s: Scheduler) -> None:
        barrier.wait()
        reports.append(s.tick())

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.started) for r in reports) == 1
    assert sum(r.leader for r in reports) == 1
    home.wait_runs()
    assert len(home.store.fires()) == 1

    # A leader whose lease lapsed (paused process, lost clock) is fenced out of claiming.
    holder = next(s for s in racers if home.store.lease()["owner"] == s.owner)  # type: ignore[index]
    clock.advance(3600 + holder.lease_ttl_s + 1)
    other = next(s for s in racers if s is not holder)
    assert other.store.acquire_lease(other.owner, 1, "h", clock.now, 60)
    from skyflow.scheduler.decisions import Fire

    assert holder.store.claim(holder.owner, "hourly", (Fire("cron:1", "cron", 1.0),), None, clock.now) == []
    assert not holder.tick().leader
    home.wait_runs()


def test_replace_cancels_the_running_run_and_starts_the_new_tick(home: Home, tmp_path: Path) -> None:
    go = tmp_path / "go"
    clock = clock_at("2025-06-02T09:59:00+00:00")
    _add(home, "blocking.yaml", BLOCKING.replace("GO_FILE", str(go)), clock.now)
    scheduler = Scheduler(home.store, home.launcher, clock=clock)
    clock.advance(120)
    assert fields(scheduler.tick()) == ["blocking-cron-20250602-100000"]
    _wait_running(home, "blocking-cron-20250602-100000")
    clock.advance(3600)
    report = scheduler.tick()
    assert report.cancelled == ["blocking-cron-20250602-100000"]
    assert fields(report) == ["blocking-cron-20250602-110000"]
    go.write_text("")
    assert home.wait_runs() == {"blocking-cron-20250602-100000": "cancelled",
                                "blocking-cron-20250602-110000": "succeeded"}
    assert home.stages("blocking-cron-20250602-100000") == {"wait": "cancelled"}


def test_forbid_holds_a_due_tick_until_the_active_run_ends(home: Home, tmp_path: Path) -> None:
    go = tmp_path / "go"
    clock = clock_at("2025-06-02T09:59:00+00:00")
    text = BLOCKING.replace("GO_FILE", str(go)).replace("replace", "forbid")
    _add(home, "blocking.yaml", text, clock.now)
    scheduler = Scheduler(home.store, home.launcher, clock=clock)
    clock.advance(120)
    assert fields(scheduler.tick()) == ["blocking-cron-20250602-100000"]
    clock.advance(3600)
    report = scheduler.tick()
    assert report.started == [] and report.waiting and not report.cancelled
    go.write_text("")
    home.wait_runs()
    clock.advance(60)
    assert fields(scheduler.tick()) == ["blocking-cron-20250602-110000"]
    home.wait_runs()
