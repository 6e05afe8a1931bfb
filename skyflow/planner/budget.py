"""One time budget for a whole planning call, shared by its phases, and the progress it reports.

`Policy.time_limit_s` bounds the whole `plan_pipeline` call (from ``started``, which the caller may
set to when its command began), not only the integer program: candidates, pruning, the local
search, building the program and the baseline all count. The exact steps (candidates, merging,
pruning, the DP) always run; the searches take what is left: the local search stops between
rounds, the LP relaxation and HiGHS get time limits, and HiGHS is interrupted at the deadline.

The clock is an argument (``time.monotonic`` unless given) so that tests can drive a budget
without waiting; progress goes to a callback (the CLI prints it on a terminal), never to a stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]

# Kept back from the integer program for what follows it: the plan's evaluation, warnings, rendering.
RESERVE_FRACTION = 0.05
# The least any search step is given, so that a budget spent on the exact steps still yields a plan.
MIN_STEP_S = 0.2


class Budget:
    """Seconds left of ``limit_s`` (None: no limit) since ``started`` on ``clock``."""

    def __init__(self, limit_s: float | None, *, clock: Callable[[], float] | None = None,
                 started: float | None = None, progress: Progress | None = None) -> None:
        self.limit_s = limit_s
        self.clock = clock or time.monotonic
        self.started = self.clock() if started is None else started
        self._progress = progress
        self._origin = self.started  # progress counts from the whole call's start

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float | None:
        """Seconds left (never negative), or None without a limit."""
        return None if self.limit_s is None else max(self.limit_s - self.elapsed(), 0.0)

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0.0

    def spent(self) -> bool:
        """Only the reserve for what follows the search is left (never without a limit)."""
        return self.short_of(0.0)

    def short_of(self, seconds: float) -> bool:
        """No more than ``seconds`` left before the reserve (never without a limit)."""
        left = self.left()
        return left is not None and self.limit_s is not None and left - RESERVE_FRACTION * self.limit_s <= seconds

    def share(self, fraction: float, floor: float = MIN_STEP_S) -> float | None:
        """A step's time limit: ``fraction`` of what is left, at least ``floor`` (None without a limit)."""
        left = self.left()
        return None if left is None else max(fraction * left, floor)

    def for_search(self) -> float | None:
        """The integer program's time limit: what is left less the reserve for what follows it."""
        left = self.left()
        if left is None or self.limit_s is None:
            return None
        return max(left - RESERVE_FRACTION * self.limit_s, MIN_STEP_S)

    def part(self, fraction: float) -> Budget:
        """A budget of its own for a side step (the baseline, explaining infeasibility): ``fraction``
        of what is left, from now, reporting to the same place."""
        left = self.left()
        limit = None if left is None else max(fraction * left, MIN_STEP_S)
        child = Budget(limit, clock=self.clock, progress=self._progress)
        child._origin = self._origin
        return child

    def report(self, message: str) -> None:
        """Tell the caller what planning is doing (elapsed seconds first)."""
        if self._progress is not None:
            self._progress(f"{self.clock() - self._origin:.1f} s: {message}")


UNLIMITED = Budget(None, clock=lambda: 0.0)
