"""Cron ticks across DST and the pure scheduling decisions (catchup, concurrency, data changes)."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from skyflow.errors import SchedulerError
from skyflow.scheduler.decisions import (
    MISSING,
    Fingerprint,
    ScheduleView,
    change_reason,
    decide,
    needs_digest,
    tick_key,
)
from skyflow.scheduler.timing import due_ticks, format_tick, latest_tick, next_tick

BERLIN = "Europe/Berlin"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, tz: str = BERLIN) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def local(ticks: tuple[float, ...] | list[float], tz: str = BERLIN) -> list[str]:
    return [format_tick(t, tz) for t in ticks]


def test_daily_0230_in_the_spring_gap_fires_once_at_0300_summer_time() -> None:
    ticks, cut = due_ticks("30 2 * * *", BERLIN, at(2025, 3, 29), at(2025, 3, 31, 12))
    assert local(ticks) == ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    assert not cut


def test_daily_0230_in_the_repeated_autumn_hour_fires_once() -> None:
    ticks, _ = due_ticks("30 2 * * *", BERLIN, at(2025, 10, 25), at(2025, 10, 27))
    assert local(ticks) == ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00"]
    assert latest_tick("30 2 * * *", BERLIN, at(2025, 10, 26, 12)) == at(2025, 10, 26, 2, 30)


def test_hourly_cron_fires_in_both_copies_of_the_repeated_hour() -> None:
    ticks, _ = due_ticks("30 * * * *", BERLIN, at(2025, 10, 26, 1), at(2025, 10, 26, 3, 45))
    assert len(ticks) == 4  # 01:30+02, 02:30+02, 02:30+01, 03:30+01: the day has 25 hours
    assert [b - a for a, b in itertools.pairwise(ticks)] == [3600.0, 3600.0, 3600.0]


def test_monday_0300_stays_0300_local_across_dst_in_new_york() -> None:
    tz = "America/New_York"
    first = next_tick("0 3 * * 1", tz, at(2025, 3, 1, tz=tz))
    ticks, _ = due_ticks("0 3 * * 1", tz, at(2025, 3, 1, tz=tz), at(2025, 3, 20, tz=tz))
    assert ticks[0] == first
    assert local(ticks, tz) == ["2025-03-03T03:00:00-05:00", "2025-03-10T03:00:00-04:00", "2025-03-17T03:00:00-04:00"]


def test_a_year_of_missed_minutes_is_cut_to_the_newest_hundred() -> None:
    ticks, cut = due_ticks("* * * * *", "UTC", at(2024, 1, 1, tz="UTC"), at(2025, 1, 1, tz="UTC"))
    assert cut and len(ticks) == 100 and ticks[-1] == at(2025, 1, 1, tz="UTC")


def _every_tick(cron: str, tz: str, after_s: float, now_s: float) -> list[float]:
    """Every tick in (after_s, now_s], one next_tick at a time: the definition due_ticks must meet."""
    out, tick = [], next_tick(cron, tz, after_s)
    while tick <= now_s:
        out.append(tick)
        tick = next_tick(cron, tz, tick)
    return out


@pytest.mark.parametrize(("cron", "tz"), [("30 2 * * *", BERLIN), ("0 * * * *", BERLIN), ("*/20 * * * *", "UTC"),
                                          ("0 3 * * 1", "America/New_York"), ("15 1 * * *", "America/New_York")])
@pytest.mark.parametrize("limit", [1, 5, 100])
def test_due_ticks_are_the_newest_ticks_of_the_window_across_dst(cron: str, tz: str, limit: int) -> None:
    # windows around both DST changes of 2025, short and long enough to be cut
    windows = [(at(2025, 3, 28, tz=tz), at(2025, 4, 2, tz=tz)), (at(2025, 10, 24, tz=tz), at(2025, 11, 4, tz=tz)),
               (at(2025, 1, 1, tz=tz), at(2025, 1, 1, 3, tz=tz))]
    for start, end in windows:
        every = _every_tick(cron, tz, start, end)
        ticks, cut = due_ticks(cron, tz, start, end, limit=limit)
        assert list(ticks) == every[-limit:]
        assert cut == (len(every) > limit)


def test_bad_cron_and_zone_are_scheduler_errors() -> None:
    with pytest.raises(SchedulerError, match="not a valid cron expression: '61 \\* \\* \\* \\*'"):
        next_tick("61 * * * *", "UTC", 0)
    with pytest.raises(SchedulerError, match="unknown timezone 'Mars/Olympus'"):
        next_tick("0 3 * * *", "Mars/Olympus", 0)


def view(**fields: object) -> ScheduleView:
    base: dict[str, object] = {"name": "s", "cron": "0 * * * *", "timezone": "UTC", "concurrency": "forbid",
                               "catchup": "latest", "watermark_s": at(2025, 1, 1, 0, tz="UTC")}
    base.update(fields)
    return ScheduleView(**base)  # type: ignore[arg-type]


NOW = at(2025, 1, 1, 5, 10, tz="UTC")  # ticks 01:00..05:00 are due
TICKS = [at(2025, 1, 1, h, tz="UTC") for h in range(1, 6)]


def test_catchup_latest_fires_the_newest_tick_and_skips_the_rest() -> None:
    d = decide(view(), NOW, active_runs=0)
    assert [f.key for f in d.fires] == [tick_key(TICKS[-1])]
    assert list(d.skipped_ticks) == TICKS[:-1] and d.watermark_s == TICKS[-1]


def test_catchup_all_with_allow_fires_every_tick() -> None:
    d = decide(view(catchup="all", concurrency="allow"), NOW, active_runs=0)
    assert [f.tick_s for f in d.fires] == TICKS and not d.skipped_ticks and d.watermark_s == TICKS[-1]


def test_catchup_all_with_forbid_fires_oldest_first_one_at_a_time() -> None:
    d = decide(view(catchup="all"), NOW, active_runs=0)
    assert [f.tick_s for f in d.fires] == TICKS[:1] and d.watermark_s == TICKS[0]
    waiting = decide(view(catchup="all", watermark_s=TICKS[0]), NOW, active_runs=1)
    assert not waiting.fires and waiting.watermark_s is None and "wait for the active run" in (waiting.waiting or "")
    assert [f.tick_s for f in decide(view(catchup="all", watermark_s=TICKS[0]), NOW, 0).fires] == TICKS[1:2]


def test_catchup_none_fires_on_time_ticks_and_drops_late_ones() -> None:
    on_time = decide(view(catchup="none"), TICKS[-1] + 60, active_runs=0, grace_s=300)
    assert [f.tick_s for f in on_time.fires] == [TICKS[-1]]
    late = decide(view(catchup="none"), NOW, active_runs=0, grace_s=300)
    assert not late.fires and list(late.skipped_ticks) == TICKS and late.watermark_s == TICKS[-1]


def test_forbid_keeps_a_due_tick_waiting_while_a_run_is_active() -> None:
    d = decide(view(), NOW, active_runs=1)
    assert not d.fires and not d.cancel_active
    assert d.watermark_s == TICKS[-2]  # the older ticks are skipped by catchup; the newest stays due


def test_replace_cancels_the_active_run_and_starts_only_the_newest() -> None:
    d = decide(view(concurrency="replace", catchup="all"), NOW, active_runs=1)
    assert d.cancel_active and [f.tick_s for f in d.fires] == [TICKS[-1]] and list(d.skipped_ticks) == TICKS[:-1]


def test_allow_starts_beside_an_active_run() -> None:
    d = decide(view(concurrency="allow"), NOW, active_runs=3)
    assert len(d.fires) == 1 and not d.cancel_active


def test_a_pending_change_rides_on_a_due_tick_or_fires_alone() -> None:
    both = decide(view(pending_change="raw changed"), NOW, 0)
    assert len(both.fires) == 1 and both.fires[0].serves_change and "raw changed" in both.fires[0].reason
    alone = decide(view(cron=None, pending_change="raw changed"), NOW, 0)
    assert alone.fires[0].key.startswith("change:") and alone.fires[0].tick_s is None
    assert decide(view(cron=None, pending_change="raw changed"), NOW, 1).fires == ()


def test_nothing_due_and_paused_decide_nothing() -> None:
    assert decide(view(watermark_s=TICKS[-1]), NOW, 0).fires == ()
    assert decide(view(paused=True, pending_change="x"), NOW, 0).fires == ()


def test_content_is_read_only_when_metadata_moved() -> None:
    seen = Fingerprint("ETag=abc", "sha256:1")
    assert not needs_digest(seen, "ETag=abc")
    assert needs_digest(seen, "ETag=def") and needs_digest(None, "ETag=abc")


def test_change_reasons_baseline_touch_vanish_and_return() -> None:
    old = Fingerprint("t=1", "sha256:aaaa")
    assert change_reason(None, old, "raw") is None
    assert change_reason(old, Fingerprint("t=2", "sha256:aaaa"), "raw") is None
    assert change_reason(old, Fingerprint(MISSING, MISSING), "raw") is None
    assert change_reason(Fingerprint(MISSING, MISSING), old, "raw") == "raw appeared"
    assert (change_reason(old, Fingerprint("t=2", "sha256:bbbb"), "raw") or "").startswith("raw changed")


def test_a_fired_run_never_waits_for_a_question_even_from_a_schedule_stored_without_yes() -> None:
    from skyflow.scheduler.launch import run_command
    from skyflow.scheduler.store import ScheduleRecord

    def record(run_args: tuple[str, ...]) -> ScheduleRecord:
        return ScheduleRecord(name="n", target="p.yaml", pipeline="p", cron="0 3 * * *", timezone="UTC", on_change=(),
                              concurrency="forbid", catchup="latest", params={"lr": 0.1}, run_args=run_args)

    old = run_command(record(("--infra", "local")), "r1")
    assert old[-3:] == ["--infra", "local", "--yes"] and old.count("--yes") == 1
    assert run_command(record(("--yes",)), "r1").count("--yes") == 1
    assert "--set" in old and "lr=0.1" in old
