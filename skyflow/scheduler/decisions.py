"""What a schedule does now: a pure function of its state, the clock, and whether a run is active.

Catchup decides which of the ticks that fell due get a run; concurrency decides whether a run may
start now. Under ``forbid`` a selected tick or a seen data change waits (it stays due) until the
active run ends; ``catchup: none`` then drops it once it is later than the grace period, exactly as a
tick missed while the scheduler was down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from skyflow.scheduler.timing import due_ticks

Concurrency = Literal["forbid", "allow", "replace"]
Catchup = Literal["latest", "all", "none"]

MISSING = "missing"

# How late a tick may start under `catchup: none` and still count as on time.
DEFAULT_GRACE_S = 300.0


@dataclass(frozen=True)
class ScheduleView:
    """The parts of a stored schedule a decision reads."""

    name: str
    cron: str | None
    timezone: str
    concurrency: Concurrency
    catchup: Catchup
    watermark_s: float  # every tick at or before this has been fired or skipped
    pending_change: str | None = None  # why data changed, while that change has no run yet
    paused: bool = False


@dataclass(frozen=True)
class Fire:
    """One run to start: its unique key (no key ever fires twice), why, and the tick it serves."""

    key: str
    reason: str
    tick_s: float | None = None
    serves_change: bool = False


@dataclass(frozen=True)
class Decision:
    fires: tuple[Fire, ...] = ()
    skipped_ticks: tuple[float, ...] = ()
    cancel_active: bool = False
    watermark_s: float | None = None  # the new watermark; None leaves it as it is
    waiting: str | None = None  # why something due did not start
    notes: tuple[str, ...] = field(default_factory=tuple)


def tick_key(tick_s: float) -> str:
    return f"cron:{int(tick_s)}"


def select_ticks(view: ScheduleView, now_s: float, grace_s: float) -> tuple[list[float], list[float], list[str]]:
    """(ticks to fire, ticks to skip, notes) under the catchup policy."""
    if view.cron is None:
        return [], [], []
    due, cut = due_ticks(view.cron, view.timezone, view.watermark_s, now_s)
    notes = [f"more than {len(due)} ticks were missed; only the newest {len(due)} are considered"] if cut else []
    if not due:
        return [], [], notes
    if view.catchup == "all":
        return list(due), [], notes
    newest, older = due[-1], list(due[:-1])
    if view.catchup == "none" and now_s - newest > grace_s:
        return [], [*older, newest], notes
    return [newest], older, notes


def decide(view: ScheduleView, now_s: float, active_runs: int, *, grace_s: float = DEFAULT_GRACE_S) -> Decision:
    """The runs to start, the ticks to skip and whether to cancel the active run."""
    if view.paused:
        return Decision()
    ticks, skipped, notes = select_ticks(view, now_s, grace_s)
    skipped_mark = max(skipped) if skipped else None
    if not ticks and view.pending_change is None:
        return Decision(skipped_ticks=tuple(skipped), watermark_s=skipped_mark, notes=tuple(notes))
    if active_runs and view.concurrency == "forbid":
        what = "a data change" if not ticks else f"{len(ticks)} due tick(s)"
        return Decision(skipped_ticks=tuple(skipped), watermark_s=skipped_mark, notes=tuple(notes),
                        waiting=f"{what} wait for the active run to end (concurrency: forbid)")
    if view.concurrency == "forbid":
        # One run at a time: the oldest tick goes now, the rest stay due for later passes.
        ticks = ticks[:1]
    elif view.concurrency == "replace" and len(ticks) > 1:
        # Each would cancel the one before it; only the newest is worth starting.
        skipped, ticks = [*skipped, *ticks[:-1]], ticks[-1:]
    fires = [Fire(tick_key(t), "cron", t) for t in ticks]
    if view.pending_change is not None:
        if fires:  # one run reads the new data and serves the newest tick too
            last = fires[-1]
            fires[-1] = Fire(last.key, f"cron+change: {view.pending_change}", last.tick_s, serves_change=True)
        else:
            fires.append(Fire(f"change:{now_s:.6f}", f"change: {view.pending_change}", None, serves_change=True))
    marks = [t for t in (*ticks, *skipped)]
    return Decision(fires=tuple(fires), skipped_ticks=tuple(skipped),
                    cancel_active=bool(active_runs) and view.concurrency == "replace",
                    watermark_s=max(marks) if marks else None, notes=tuple(notes))


@dataclass(frozen=True)
class Fingerprint:
    """What is known about one watched input: cheap metadata, and the content digest behind it."""

    meta: str
    digest: str | None


def needs_digest(old: Fingerprint | None, meta: str) -> bool:
    """Only read the content when the metadata moved (or nothing was seen yet)."""
    return old is None or old.meta != meta or old.digest is None


def change_reason(old: Fingerprint | None, new: Fingerprint, ref: str) -> str | None:
    """Why ``ref`` counts as changed, or None. The first sighting is a baseline, not a change."""
    # A vanished input is no reason to retrain (the run would fail); its return is.
    if old is None or old.digest == new.digest or new.digest == MISSING:
        return None
    if old.digest == MISSING:
        return f"{ref} appeared"
    return f"{ref} changed ({(old.digest or '')[:15]} -> {(new.digest or '')[:15]})"
