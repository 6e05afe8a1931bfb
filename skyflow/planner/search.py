"""A fast feasible plan for the integer program to start from: local search over stage options.

Not a solver of its own: the integer program proves optimality (gap 0) either way, given the time;
when its time limit stops it first, the start is the plan it returns at worst. A start close
to the optimum lets HiGHS skip most of its own search for a first good plan, which on large DAGs
is where its time goes. Moves change one stage at a time, with exact cost deltas (compute plus
egress, each artifact paid once per distinct destination), then move a stage to another cloud
and let its neighbours follow, which single moves cannot do when sharing a transfer ties
consumers together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from skyflow.planner.budget import Budget
from skyflow.planner.problem import Problem, TransferCosts

_EPS = 1e-9
# Under a time budget the local search may take this share of what is left.
_SEARCH_SHARE = 0.5


class LocalSearch:
    """Positions into ``keep`` per stage, with per-transfer counts of consumers at each location."""

    def __init__(self, problem: Problem, keep: list[np.ndarray]) -> None:
        self.problem = problem
        n = len(keep)
        self.locs = [problem.opt_loc[s][keep[s]] for s in range(n)]
        self.compute = [problem.opt_compute[s][keep[s]] for s in range(n)]
        self.pos = [int(np.argmin(c)) for c in self.compute]
        self.at = [int(self.locs[s][self.pos[s]]) for s in range(n)]  # each stage's location
        transfers = problem.transfers
        self.counts = np.zeros((len(transfers), len(problem.locations)), dtype=np.int64)
        self.incoming: list[list[int]] = [[] for _ in range(n)]
        cost = _costs(problem)
        # What a stage's cost change reads, per transfer into it: (costs, consumer counts or None when the
        # stage is the only consumer, the fixed source location or -1, the producer or -1); per transfer
        # out of it: (costs, counts, the only consumer or -1).
        self.reads_in: list[list[tuple[Any, np.ndarray | None, int, int]]] = [[] for _ in range(n)]
        self.reads_out: list[list[tuple[Any, np.ndarray, int]]] = [[] for _ in range(n)]
        for ti, t in enumerate(transfers):
            alone = len(t.consumers) == 1
            fixed = problem.loc_index[t.source] if t.source is not None else -1
            for c in t.consumers:
                self.counts[ti, self.at[c]] += 1
                self.incoming[c].append(ti)
                producer = -1 if t.producer is None else t.producer
                self.reads_in[c].append((cost[ti], None if alone else self.counts[ti], fixed, producer))
            if t.producer is not None:
                self.reads_out[t.producer].append((cost[ti], self.counts[ti], t.consumers[0] if alone else -1))
        linked: list[set[int]] = [set() for _ in range(n)]
        for t in transfers:
            if t.producer is not None:
                for c in t.consumers:
                    linked[t.producer].add(c)
                    linked[c].add(t.producer)
        self.neighbours = [sorted(nbs - {s}) for s, nbs in enumerate(linked)]
        clouds = problem.loc_cloud
        self.by_cloud = [[np.flatnonzero(clouds[locs] == c) for c in sorted(set(clouds[locs].tolist()))]
                         for locs in self.locs]

    def choice(self, keep: list[np.ndarray]) -> list[int]:
        return [int(keep[s][k]) for s, k in enumerate(self.pos)]

    def delta(self, s: int) -> np.ndarray:
        """The change in total cost of moving stage s to each of its options, the rest fixed."""
        locs, here, at = self.locs[s], self.at[s], self.at
        out: np.ndarray = self.compute[s] - self.compute[s][self.pos[s]]
        for cost, count, fixed, producer in self.reads_in[s]:
            rate = cost[fixed if fixed >= 0 else at[producer]]
            if count is None:  # s is the only consumer: it pays wherever s is
                out += rate[locs]
                out -= rate[here]
                continue
            count[here] -= 1  # without s: a location pays when no other consumer is there
            out += rate[locs] * (count[locs] == 0)
            if count[here] == 0:
                out -= rate[here]
            count[here] += 1
        for cost, count, only in self.reads_out[s]:
            if only >= 0:
                rate = cost[:, at[only]]
                out += rate[locs]
                out -= rate[here]
                continue
            dests = np.flatnonzero(count)
            if len(dests):
                rates = cost[:, dests]
                out += rates[locs].sum(axis=1)
                out -= rates[here].sum()
        return out

    def move(self, s: int, k: int) -> None:
        here, there = self.at[s], int(self.locs[s][k])
        for ti in self.incoming[s]:
            self.counts[ti, here] -= 1
            self.counts[ti, there] += 1
        self.pos[s] = k
        self.at[s] = there

    def descend(self, stages: list[int] | None = None, out_of_time: Callable[[], bool] = lambda: False) -> None:
        """Best single-stage moves until none helps (or time is out), revisiting the neighbours of what moved."""
        todo = list(range(len(self.locs))) if stages is None else stages
        while todo and not out_of_time():
            again: set[int] = set()
            for s in todo:
                if len(self.locs[s]) > 1 and self._step(s) < -_EPS:
                    again.update(self.neighbours[s])
            todo = sorted(again)

    def _step(self, s: int) -> float:
        d = self.delta(s)
        k = int(np.argmin(d))
        if d[k] < -_EPS:
            self.move(s, k)
            return float(d[k])
        return 0.0

    def shift_clouds(self, max_rounds: int = 20, out_of_time: Callable[[], bool] = lambda: False) -> None:
        """Move a stage to its best option in another cloud, its neighbours follow; keep it if cheaper."""
        for _ in range(max_rounds):
            if out_of_time():
                return
            improved = False
            for s in range(len(self.locs)):
                if len(self.by_cloud[s]) > 1:
                    improved |= self._try_clouds(s)
            if not improved:
                return

    def _try_clouds(self, s: int) -> bool:
        clouds = self.problem.loc_cloud
        d = self.delta(s)  # the same for every group: each failed try is undone exactly
        for group in self.by_cloud[s]:
            if clouds[self.locs[s][group[0]]] == clouds[self.at[s]]:
                continue
            k = int(group[np.argmin(d[group])])
            undo = [(s, self.pos[s])]
            total = float(d[k])
            self.move(s, k)
            for nb in self.neighbours[s]:
                undo.append((nb, self.pos[nb]))
                if len(self.locs[nb]) > 1:
                    total += self._step(nb)
            if total < -_EPS:
                return True
            for stage, old in reversed(undo):
                self.move(stage, old)
        return False


def _costs(problem: Problem) -> list[np.ndarray | TransferCosts]:
    """Each transfer's (location x location) costs: the dense array where the problem holds one (a row or
    column is then a view), else read through the schedule ids."""
    out: list[np.ndarray | TransferCosts] = []
    for t in problem.transfers:
        cost = problem.cost_matrix(t.size_gb)
        out.append(cost if cost.dense is None else cost.dense)
    return out


def descent_from(problem: Problem, keep: list[np.ndarray], positions: list[int], *,
                 budget: Budget | None = None) -> list[int]:
    """The plan (option index per stage) that best single-stage moves reach from ``positions`` (index into
    ``keep`` per stage): a quick start from a good place, such as the forest relaxation's optimum."""
    return _searched(problem, keep, positions, budget, shift_clouds=False)


def positions_of(plan: list[int], keep: list[np.ndarray]) -> list[int]:
    """A plan's option indices as positions into ``keep`` (each chosen option must be among them)."""
    return [int(np.flatnonzero(opts == k)[0]) for k, opts in zip(plan, keep, strict=True)]


def good_start(problem: Problem, keep: list[np.ndarray], positions: list[int] | None = None, *,
               budget: Budget | None = None) -> list[int]:
    """A low-cost plan (option index per stage) for the cost objective; no optimality claimed.
    ``positions`` (index into ``keep`` per stage; default each stage's cheapest) is where it begins.
    Under a ``budget`` it stops between rounds once half of what was left is spent (the plan is then
    less polished, never invalid)."""
    return _searched(problem, keep, positions, budget, shift_clouds=True)


def _searched(problem: Problem, keep: list[np.ndarray], positions: list[int] | None, budget: Budget | None, *,
              shift_clouds: bool) -> list[int]:
    """Single-stage moves from ``positions`` and, with ``shift_clouds``, cloud shifts and moves again; under a
    ``budget`` it stops between rounds once half of what was left is spent."""
    share = None if budget is None else budget.share(_SEARCH_SHARE)
    ends = None if budget is None or share is None else budget.clock() + share

    def out_of_time() -> bool:
        return ends is not None and budget is not None and budget.clock() >= ends

    search = LocalSearch(problem, keep)
    for s, k in enumerate(positions or ()):
        search.move(s, k)
    search.descend(out_of_time=out_of_time)
    if shift_clouds:
        search.shift_clouds(out_of_time=out_of_time)
        search.descend(out_of_time=out_of_time)
    return search.choice(keep)
