"""The placement integer program, built as sparse rows for scipy.optimize.milp (HiGHS).

x[s,o] = 1 places stage s on option o. For a transfer, y[v] = 1 when some consumer sits at
location v (so the artifact moves there once). Its egress is linearized per destination: when
the rates depend only on the clouds of the two ends (and 0 inside a region), one variable
e[v] >= rate(k, cloud(v)) * (X[p in cloud k] + y[v] - 1 - X[p at v]) per cloud k suffices;
otherwise one z[u,v] >= X[p at u] + y[v] - 1 per location pair.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from skyflow.errors import PlanningError
from skyflow.planner.problem import Problem, Transfer

Terms = list[tuple[int, float]]


class MilpModel:
    def __init__(self, problem: Problem, keep: list[np.ndarray], *, with_time: bool) -> None:
        self.problem = problem
        self.keep = keep
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[Terms, float, float]] = []
        self.cost: dict[int, float] = defaultdict(float)
        self.x = [np.array([self._var(0, 1, True) for _ in opts], dtype=np.int64) for opts in keep]
        self.at: list[dict[int, Terms]] = []
        for s, opts in enumerate(keep):
            by_loc: dict[int, Terms] = defaultdict(list)
            for var, k in zip(self.x[s], opts, strict=True):
                by_loc[int(problem.opt_loc[s][k])].append((int(var), 1.0))
                self.cost[int(var)] += float(problem.opt_compute[s][k])
            self.at.append(by_loc)
            self.add_row([(int(v), 1.0) for v in self.x[s]], lo=1, hi=1)
        for t in problem.transfers:
            self._add_transfer(t)
        self.makespan: int | None = None
        if with_time:
            self._add_time()

    # -- building blocks ---------------------------------------------------------------
    def _var(self, lo: float, hi: float, integer: bool = False) -> int:
        self.lb.append(lo)
        self.ub.append(hi)
        self.integer.append(1 if integer else 0)
        return len(self.lb) - 1

    def add_row(self, terms: Terms, lo: float = -np.inf, hi: float = np.inf) -> None:
        self.rows.append((terms, lo, hi))

    def _loc(self, s: int, loc: int) -> Terms:
        return self.at[s].get(loc, [])

    def _cloud_of(self, loc: int) -> str:
        return self.problem.cloud_names[int(self.problem.loc_cloud[loc])]

    def _presence(self, t: Transfer, dests: list[int]) -> dict[int, Terms]:
        if len(t.consumers) == 1:
            return {v: self._loc(t.consumers[0], v) for v in dests}
        out = {}
        for v in dests:
            y = self._var(0, 1)
            for c in t.consumers:
                if v in self.at[c]:
                    self.add_row([(y, 1.0)] + [(var, -1.0) for var, _ in self._loc(c, v)], lo=0)
            out[v] = [(y, 1.0)]
        return out

    def _add_transfer(self, t: Transfer) -> None:
        p = self.problem
        if t.size_gb <= 0:
            return
        cost = p.cost_matrix(t.size_gb)
        dests = sorted({v for c in t.consumers for v in self.at[c]})
        here = self._presence(t, dests)
        if t.producer is None:
            src = p.loc_index[t.source]  # type: ignore[index]
            for v in dests:
                for var, coef in here[v]:
                    self.cost[var] += coef * float(cost[src, v])
            return
        sources = sorted(self.at[t.producer])
        rates = self._cloud_rates(cost, sources, dests)
        if rates is None:
            self._pairwise(t.producer, cost, sources, dests, here)
        else:
            self._by_cloud(t.producer, rates, sources, dests, here)

    def _cloud_rates(self, cost: np.ndarray, sources: list[int], dests: list[int]) -> dict | None:
        """rate per (source cloud, target cloud) when that is all egress depends on, else None."""
        cloud = self.problem.loc_cloud
        src, dst = np.asarray(sources), np.asarray(dests)
        block = cost[np.ix_(src, dst)]
        pair = cloud[src][:, None] * (cloud.max() + 1) + cloud[dst][None, :]
        off = src[:, None] != dst[None, :]
        keys, values = pair[off], block[off]
        if len(keys) == 0:
            return {}
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        starts = np.r_[0, np.nonzero(np.diff(keys))[0] + 1]
        first = values[starts]
        if not np.array_equal(np.repeat(first, np.diff(np.r_[starts, len(keys)])), values):
            return None
        names = self.problem.cloud_names
        width = cloud.max() + 1
        return {(names[int(k // width)], names[int(k % width)]): float(v) for k, v in zip(keys[starts], first,
                                                                                          strict=True)}

    def _by_cloud(self, producer: int, rates: dict, sources: list[int], dests: list[int],
                  here: dict[int, Terms]) -> None:
        in_cloud: dict[str, Terms] = defaultdict(list)
        for u in sources:
            in_cloud[self._cloud_of(u)] += self._loc(producer, u)
        for v in dests:
            target = self._cloud_of(v)
            e: int | None = None
            for cloud, terms in in_cloud.items():
                rate = rates.get((cloud, target), 0.0)
                if rate <= 0:
                    continue
                if e is None:
                    e = self._var(0, np.inf)
                    self.cost[e] += 1.0
                row = [(e, 1.0)] + [(var, -rate) for var, _ in terms] + [(var, -rate * c) for var, c in here[v]]
                if cloud == target:
                    row += [(var, rate) for var, _ in self._loc(producer, v)]
                self.add_row(row, lo=-rate)

    def _pairwise(self, producer: int, cost: np.ndarray, sources: list[int], dests: list[int],
                  here: dict[int, Terms]) -> None:
        for u in sources:
            for v in dests:
                rate = float(cost[u, v])
                if u == v or rate <= 0:
                    continue
                z = self._var(0, np.inf)
                self.cost[z] += rate
                row = [(z, 1.0)] + [(var, -1.0) for var, _ in self._loc(producer, u)]
                self.add_row(row + [(var, -c) for var, c in here[v]], lo=-1)

    def _duration(self, s: int) -> Terms:
        hours = self.problem.opt_hours[s][self.keep[s]]
        return [(int(var), -float(h)) for var, h in zip(self.x[s], hours, strict=True)]

    def _add_time(self) -> None:
        p = self.problem
        finish = [self._var(0, np.inf) for _ in p.names]
        for s in range(len(p.names)):
            self.add_row([(finish[s], 1.0), *self._duration(s)], lo=0)
        for t in p.transfers:
            tau = p.transfer_hours(t.size_gb)
            for c in t.consumers:
                if t.producer is None:
                    src = p.loc_index[t.source]  # type: ignore[index]
                    row = [(finish[c], 1.0), *self._duration(c)] + [(v, tau) for v, _ in self._loc(c, src)]
                    self.add_row(row, lo=tau)
                    continue
                row = [(finish[c], 1.0), (finish[t.producer], -1.0), *self._duration(c)]
                if tau > 0:
                    moved = self._var(0, 1)
                    for u in self.at[t.producer]:
                        self.add_row([(moved, 1.0)] + [(v, -1.0) for v, _ in self._loc(t.producer, u)]
                                     + [(v, 1.0) for v, _ in self._loc(c, u)], lo=0)
                    row.append((moved, -tau))
                self.add_row(row, lo=0)
        for a, b in p.ordering:
            self.add_row([(finish[b], 1.0), (finish[a], -1.0), *self._duration(b)], lo=0)
        self.makespan = self._var(0, np.inf)
        for f in finish:
            self.add_row([(self.makespan, 1.0), (f, -1.0)], lo=0)

    # -- objectives and solving --------------------------------------------------------
    def cost_row(self) -> Terms:
        return list(self.cost.items())

    def makespan_row(self) -> Terms:
        assert self.makespan is not None, "built without time variables"
        return [(self.makespan, 1.0)]

    def cost_objective(self) -> np.ndarray:
        c = np.zeros(len(self.lb))
        for var, coef in self.cost.items():
            c[var] = coef
        return c

    def makespan_objective(self) -> np.ndarray:
        c = np.zeros(len(self.lb))
        c[self.makespan_row()[0][0]] = 1.0
        return c

    def makespan_value(self, x: np.ndarray) -> float:
        return float(x[self.makespan_row()[0][0]])

    def solve(self, objective: np.ndarray, what: str) -> np.ndarray:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix

        rows, cols, vals = [], [], []
        for i, (terms, _, _) in enumerate(self.rows):
            for var, coef in terms:
                rows.append(i)
                cols.append(var)
                vals.append(coef)
        matrix = coo_matrix((vals, (rows, cols)), shape=(len(self.rows), len(self.lb))).tocsr()
        lo = np.array([r[1] for r in self.rows])
        hi = np.array([r[2] for r in self.rows])
        result = milp(objective, integrality=np.array(self.integer), bounds=Bounds(self.lb, self.ub),
                      constraints=LinearConstraint(matrix, lo, hi), options={"mip_rel_gap": 0.0})
        if result.x is None:
            raise PlanningError(f"no plan meets the constraints (deadline, budget) while finding {what}: "
                                f"{result.message}")
        return np.asarray(result.x)

    def choice(self, x: np.ndarray) -> list[int]:
        return [int(self.keep[s][int(np.argmax(x[self.x[s]]))]) for s in range(len(self.keep))]
