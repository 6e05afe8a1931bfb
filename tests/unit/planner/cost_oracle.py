"""An independent price oracle for planner tests: the best plan of a small pipeline by brute force
over catalog rows, priced by code that imports nothing of skyflow's planner or catalog.

It reads the same plain data a test builds its pipeline and catalog from, and prices a choice of
one catalog row per stage the way docs/planner.md states the model:
- a stage's compute is the row's hourly price x its nodes x its estimated hours;
- a stage asking for an accelerator runs on rows with that accelerator (at least the count asked);
  one asking for none runs on any row (GPU boxes included);
- each artifact moves once per destination location (region) other than where it is, at the rate
  of the most specific egress rule (`*` < cloud < cloud/region, on each end; ties to the earlier);
- time is the critical path: a stage starts when its producers have finished and their outputs
  have moved (size / 360 GB per hour across locations), and pipeline inputs have arrived.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

GB_PER_HOUR = 360.0


@dataclass(frozen=True)
class Row:
    location: str  # cloud/region
    instance: str
    hourly: float
    accelerator: str | None
    count: float


@dataclass(frozen=True)
class OracleStage:
    name: str
    hours: float
    nodes: int
    accelerator: str | None  # (name) with count 1
    inputs: tuple[str, ...]  # producer stage names, or "raw" for the pipeline input
    output_gb: float


@dataclass(frozen=True)
class Best:
    usd: float
    hours: float


def _score(pattern: str, location: str) -> int | None:
    if pattern == "*":
        return 0
    if pattern == location:
        return 2
    if "/" not in pattern and location.split("/", 1)[0] == pattern:
        return 1
    return None


def rate(rules: list[tuple[str, str, float]], source: str, target: str) -> float:
    if source == target:
        return 0.0
    best: tuple[int, float] | None = None
    for a, b, usd in rules:
        sa, sb = _score(a, source), _score(b, target)
        if sa is not None and sb is not None and (best is None or sa + sb > best[0]):
            best = (sa + sb, usd)
    return 0.0 if best is None else best[1]


def _cheapest_per_location(stage: OracleStage, rows: list[Row]) -> dict[str, float]:
    """Per location, the lowest hourly price of a row the stage runs on."""
    out: dict[str, float] = {}
    for row in rows:
        if stage.accelerator is not None and (row.accelerator != stage.accelerator or row.count < 1):
            continue
        out[row.location] = min(out.get(row.location, row.hourly), row.hourly)
    return out


def price(stages: list[OracleStage], where: dict[str, str], hourly: dict[str, float],
          rules: list[tuple[str, str, float]], raw: tuple[str, float] | None) -> Best:
    compute = sum(hourly[s.name] * s.nodes * s.hours for s in stages)
    egress, moved = 0.0, set()
    finish: dict[str, float] = {}
    for s in stages:  # in order: producers first
        start = 0.0
        for source in s.inputs:
            if source == "raw":
                assert raw is not None
                origin, size = raw
            else:
                origin, size = where[source], next(p.output_gb for p in stages if p.name == source)
            if origin != where[s.name]:
                if (source, where[s.name]) not in moved:
                    moved.add((source, where[s.name]))
                    egress += size * rate(rules, origin, where[s.name])
                start = max(start, (0.0 if source == "raw" else finish[source]) + size / GB_PER_HOUR)
            elif source != "raw":
                start = max(start, finish[source])
        finish[s.name] = start + s.hours
    return Best(compute + egress, max(finish.values(), default=0.0))


def best_plan(stages: list[OracleStage], rows: list[Row], rules: list[tuple[str, str, float]],
              raw: tuple[str, float] | None, *, deadline_h: float | None = None, max_usd: float | None = None,
              minimize: str = "cost") -> Best | None:
    """The cheapest plan within the deadline (or the fastest within the budget, the cheapest of those);
    None when no plan meets the constraint; raises LookupError when a stage runs nowhere."""
    options = []
    for s in stages:
        found = _cheapest_per_location(s, rows)
        if not found:
            raise LookupError(s.name)
        options.append(sorted(found.items()))
    plans = []
    for choice in itertools.product(*options):
        where = {s.name: loc for s, (loc, _) in zip(stages, choice, strict=True)}
        hourly = {s.name: usd for s, (_, usd) in zip(stages, choice, strict=True)}
        plans.append(price(stages, where, hourly, rules, raw))
    if minimize == "cost":
        ok = [p for p in plans if deadline_h is None or p.hours <= deadline_h + 1e-9]
        return min(ok, key=lambda p: p.usd) if ok else None
    ok = [p for p in plans if max_usd is None or p.usd <= max_usd + 1e-9]
    if not ok:
        return None
    fastest = min(p.hours for p in ok)
    return min((p for p in ok if p.hours <= fastest + 1e-6 * max(1.0, fastest)), key=lambda p: p.usd)


def as_plain(value: Any) -> Any:
    """Floats rounded for comparisons in messages."""
    return round(value, 6) if isinstance(value, float) else value
