"""Cron arithmetic in a schedule's own timezone: the ticks that fell due, and the next one."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from skyflow.errors import SchedulerError

# A scheduler that was down for a year on a per-minute cron must not queue 500k runs.
MAX_CATCHUP_TICKS = 100


def _iter(cron: str, timezone: str, start_s: float) -> croniter:
    if not croniter.is_valid(cron):
        raise SchedulerError(f"not a valid cron expression: {cron!r}; five fields, e.g. '0 3 * * 1'")
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError, OSError):
        raise SchedulerError(f"unknown timezone {timezone!r}; use an IANA name like 'Europe/Berlin'") from None
    # croniter walks wall-clock time in the zone of its start datetime; that is what makes
    # "03:00 every Monday" stay at 03:00 across DST and skip or merge the gap and overlap hours.
    return croniter(cron, datetime.fromtimestamp(start_s, zone))


def _repeat(cron: str, timezone: str, tick_s: float) -> bool:
    """A tick in the hour that DST repeats, for a job pinned to fixed hours: cron runs those once."""
    hours = cron.split()[1] if len(cron.split()) >= 5 else "*"
    return "*" not in hours and datetime.fromtimestamp(tick_s, ZoneInfo(timezone)).fold == 1


def _step(it: croniter, cron: str, timezone: str, forward: bool) -> float:
    while True:
        tick = float(it.get_next(float) if forward else it.get_prev(float))
        if not _repeat(cron, timezone, tick):
            return tick


def next_tick(cron: str, timezone: str, after_s: float) -> float:
    """The first tick strictly after ``after_s`` (epoch seconds)."""
    return _step(_iter(cron, timezone, after_s), cron, timezone, forward=True)


def latest_tick(cron: str, timezone: str, at_s: float) -> float:
    """The last tick at or before ``at_s``."""
    return _step(_iter(cron, timezone, at_s + 1e-3), cron, timezone, forward=False)


def due_ticks(cron: str, timezone: str, after_s: float, now_s: float,
              limit: int = MAX_CATCHUP_TICKS) -> tuple[tuple[float, ...], bool]:
    """Ticks in (after_s, now_s], oldest first, at most ``limit`` (the newest ones); and whether some were cut."""
    if now_s <= after_s:
        return (), False
    # Walk back from now at most limit + 1 ticks: when that many fell due, the forward walk starts at
    # the oldest of them, so a year of missed minutes costs ~limit steps, not 525,600.
    back, start, cut = _iter(cron, timezone, now_s + 1e-3), after_s, False
    for _ in range(limit + 1):
        tick = _step(back, cron, timezone, forward=False)
        if tick <= after_s:
            break
    else:
        start, cut = tick, True
    it = _iter(cron, timezone, start)
    ticks: list[float] = []
    while True:
        tick = _step(it, cron, timezone, forward=True)
        if tick > now_s:
            break
        ticks.append(tick)
        if len(ticks) > limit:
            ticks.pop(0)
            cut = True
    return tuple(ticks), cut


def format_tick(tick_s: float, timezone: str) -> str:
    """A tick as local ISO time with its offset, e.g. 2025-03-30T03:00:00+02:00."""
    return datetime.fromtimestamp(tick_s, ZoneInfo(timezone)).isoformat(timespec="seconds")
