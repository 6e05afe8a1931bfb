"""The placement integer program, built as sparse rows and solved by HiGHS (``highspy``): gap 0, or the
best plan and its proven bound when a time limit stops the search.

x[s,o] = 1 places stage s on option o. For a transfer, y[v] = 1 when some consumer sits at
location v (so the artifact moves there once). When the rates depend only on the clouds of the
two ends (and 0 inside a region), its egress to v is linearized per source cloud k:
w[k,v] <= X[p in cloud k] (less X[p at v] when v is in k) and sum_k w[k,v] >= y[v] - X[p where
moving to v is free], at cost rate(k, cloud(v)) * w[k,v]. With integer x this is exact (w[k,v]
= y[v] for the producer's cloud, 0 elsewhere); its relaxation is much tighter than one
big-M-like row per cloud, which is what makes large DAGs fast. Otherwise one
z[u,v] >= X[p at u] + y[v] - 1 per location pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from skyflow.errors import PlanningError
from skyflow.planner.budget import Budget
from skyflow.planner.problem import Problem, Transfer, TransferCosts, evaluate

if TYPE_CHECKING:
    import highspy

Terms = list[tuple[int, float]]
# How often a long search reports its best plan and bound (seconds).
_REPORT_EVERY_S = 1.0
# Programs with this many nonzeros or more are searched, under a time limit, in a child process that
# can be ended at the limit: HiGHS's steps on them are long and it can overrun its own limit by tens of
# seconds. Smaller programs keep the in-process search (no fork, and HiGHS stops on time).
CHILD_FROM_NONZEROS = 100_000
# Reduced-cost fixing keeps an option unless its reduced cost exceeds the incumbent's gap by this share of
# the incumbent plus HiGHS's dual feasibility tolerance (1e-7) per column: what floating point can be off by.
_FIXING_MARGIN = 1e-6
_DUAL_TOLERANCE = 1e-7


@dataclass(frozen=True)
class Relaxed:
    """The LP relaxation's optimal values, objective and reduced costs (HiGHS's column duals)."""

    x: np.ndarray
    value: float
    reduced_costs: np.ndarray


class InfeasibleError(PlanningError):
    """No plan meets the deadline or budget rows."""


class MilpModel:
    def __init__(self, problem: Problem, keep: list[np.ndarray], *, with_time: bool,
                 stop: Callable[[], bool] | None = None, fits: Callable[[int], bool] | None = None) -> None:
        """The program of ``problem`` over ``keep``; ``stop`` is asked between transfers, and once it says
        True building ends with ``complete`` False (the program is then unusable). ``fits`` is asked there
        too, with the nonzeros built so far; once it says False building ends the same way, with
        ``outgrown`` set to that count (a program that grows past what its caller can solve is not
        finished only to be dropped)."""
        self.problem = problem
        self.complete = False
        self.outgrown: int | None = None
        self.keep = keep
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[Terms, float, float]] = []
        self.cost: dict[int, float] = defaultdict(float)
        self.x = []
        self.at: list[dict[int, Terms]] = []
        self.shares: dict[int, dict[str, int]] = {}
        self._cloud_name: list[str] = [problem.cloud_names[c] for c in problem.loc_cloud.tolist()]
        self._cloud_tables: dict[float, dict[tuple[int, int], float]] = {}  # per artifact size, see _cloud_rates
        for s, opts in enumerate(keep):
            first = self._vars(len(opts), integer=True)
            variables = list(range(first, first + len(opts)))
            self.x.append(np.arange(first, first + len(opts), dtype=np.int64))
            by_loc: dict[int, Terms] = defaultdict(list)
            for var, loc, compute in zip(variables, problem.opt_loc[s][opts].tolist(),
                                         problem.opt_compute[s][opts].tolist(), strict=True):
                by_loc[loc].append((var, 1.0))
                self.cost[var] += compute
            self.at.append(by_loc)
            self.add_row([(v, 1.0) for v in variables], lo=1, hi=1)
        self.makespan: int | None = None
        self.bound = -np.inf  # the proven lower bound of the last solve's objective
        counted = seen = 0
        for t in problem.transfers:
            if stop is not None and stop():
                return
            if fits is not None:
                counted += sum(len(terms) for terms, _, _ in self.rows[seen:])
                seen = len(self.rows)
                if not fits(counted):
                    self.outgrown = counted
                    return
            self._add_transfer(t)
        if with_time:
            self._add_time()
        self.complete = True

    # -- building blocks ---------------------------------------------------------------
    def _var(self, lo: float, hi: float, integer: bool = False) -> int:
        self.lb.append(lo)
        self.ub.append(hi)
        self.integer.append(1 if integer else 0)
        return len(self.lb) - 1

    def _vars(self, count: int, *, integer: bool = False) -> int:
        """``count`` variables in [0, 1] at once (integer or not); the index of the first."""
        first = len(self.lb)
        self.lb += [0.0] * count
        self.ub += [1.0] * count
        self.integer += [1 if integer else 0] * count
        return first

    def add_row(self, terms: Terms, lo: float = -np.inf, hi: float = np.inf) -> None:
        self.rows.append((terms, lo, hi))

    def _loc(self, s: int, loc: int) -> Terms:
        return self.at[s].get(loc, [])

    def _cloud_of(self, loc: int) -> str:
        return self._cloud_name[loc]

    def _presence(self, t: Transfer, dests: list[int]) -> dict[int, Terms]:
        if len(t.consumers) == 1:
            at = self.at[t.consumers[0]]
            return {v: at.get(v, []) for v in dests}
        first = self._vars(len(dests))
        present = {v: first + i for i, v in enumerate(dests)}  # y[v]: some consumer sits at v
        below: dict[int, list[Terms]] = defaultdict(list)  # per v, each consumer's variables there, in order
        for c in t.consumers:
            for v, terms in self.at[c].items():
                if terms:
                    below[v].append(terms)
        rows = self.rows
        for v in dests:
            y = present[v]
            for terms in below[v]:
                rows.append(([(y, 1.0)] + [(var, -1.0) for var, _ in terms], 0, np.inf))
        return {v: [(y, 1.0)] for v, y in present.items()}

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
        rates = self._cloud_rates(t.size_gb, cost, sources, dests)
        if rates is None:
            self._pairwise(t.producer, cost, sources, dests, here)
        else:
            self._by_cloud(t.producer, rates, sources, dests, here)

    def _cloud_rates(self, size_gb: float, cost: TransferCosts, sources: list[int],
                     dests: list[int]) -> dict[tuple[str, str], float] | None:
        """rate per (source cloud, target cloud) of the pairs (source, destination) that are two places, when
        that is all egress depends on, else None. When the egress schedule between any two locations depends
        only on their clouds (looked at once), the rates come from one table per artifact size; otherwise from
        this transfer's own pairs."""
        if self._schedules is None:
            return _pair_rates(self.problem, cost, sources, dests)
        table = self._cloud_tables.get(size_gb)
        if table is None:
            table = self._cloud_tables[size_gb] = {pair: float(cost.per_tier[int(tier)])
                                                   for pair, tier in self._schedules.items()}
        cloud = self.problem.loc_cloud
        from_cloud: dict[int, list[int]] = defaultdict(list)
        to_cloud: dict[int, list[int]] = defaultdict(list)
        for u in sources:
            from_cloud[int(cloud[u])].append(u)
        for v in dests:
            to_cloud[int(cloud[v])].append(v)
        names = self.problem.cloud_names
        return {(names[k], names[c]): table[(k, c)] for k, us in from_cloud.items() for c, vs in to_cloud.items()
                if k != c or len(us) > 1 or len(vs) > 1 or us != vs}

    @cached_property
    def _schedules(self) -> dict[tuple[int, int], float] | None:
        """The egress schedule (its id) per (source cloud, target cloud) index pair between any two locations,
        or None when some pair of clouds has more than one."""
        everywhere = np.arange(len(self.problem.locations))
        return _rate_per_cloud_pair(self.problem, everywhere, everywhere, self.problem.tier_ids().astype(float))

    def _by_cloud(self, producer: int, rates: dict[tuple[str, str], float], sources: list[int], dests: list[int],
                  here: dict[int, Terms]) -> None:
        in_cloud = self._cloud_shares(producer, sources)
        for v in dests:
            target = self._cloud_of(v)
            cover: Terms = []
            row: Terms = []
            for cloud, share in in_cloud.items():
                rate = rates.get((cloud, target), 0.0)
                if rate <= 0:
                    continue
                w = self._var(0, 1)
                self.cost[w] += rate
                src = [(share, 1.0)]
                if cloud == target:
                    src += [(var, -1.0) for var, _ in self._loc(producer, v)]
                self.add_row([(w, -1.0), *src], lo=0)
                cover.append((w, 1.0))
                row += [(var, -c) for var, c in src]
            if cover:
                self.add_row(cover + row + [(var, -c) for var, c in here[v]], lo=-1)

    def _cloud_shares(self, producer: int, sources: list[int]) -> dict[str, int]:
        found = self.shares.get(producer)
        if found is None:
            terms: dict[str, Terms] = defaultdict(list)
            for u in sources:
                terms[self._cloud_of(u)] += self._loc(producer, u)
            found = {}
            for cloud, ts in terms.items():
                share = self._var(0, 1)
                self.add_row([(share, -1.0)] + [(var, 1.0) for var, _ in ts], lo=0, hi=0)
                found[cloud] = share
            self.shares[producer] = found
        return found

    def _pairwise(self, producer: int, cost: TransferCosts, sources: list[int], dests: list[int],
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
    def nonzeros(self) -> int:
        """Entries of the constraint matrix (a variable repeated in a row counted each time)."""
        return sum(len(terms) for terms, _, _ in self.rows)

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

    def solve(self, objective: np.ndarray, what: str, start: list[int] | None = None,
              time_limit_s: float | None = None, budget: Budget | None = None, floor_s: float = 0.0,
              keep_back_s: float = 0.0) -> np.ndarray:
        """The best variable values found; ``start`` (option index per stage) is a feasible plan to begin
        from. Without a time limit they are optimal; with one (``budget``'s search time less ``keep_back_s``,
        at least ``floor_s``, else ``time_limit_s``), HiGHS stops at the limit and the best plan found so far is
        returned, ``self.bound`` then being its proven lower bound."""
        import highspy

        if budget is not None and budget.limited:
            time_limit_s = max((budget.for_search() or 0.0) - keep_back_s, floor_s)
        h = _quiet_highs()
        _set_option(h, "mip_rel_gap", 0.0)
        if time_limit_s is not None:
            _set_option(h, "time_limit", max(float(time_limit_s), 0.0))
        lp = self._highs_lp(objective)
        h.passModel(lp)
        if start is not None:
            index, value = self._start_values(start)
            h.setSolution(len(index), index, value)  # HiGHS completes the continuous part
        if budget is not None and time_limit_s is not None and len(lp.a_matrix_.index_) >= CHILD_FROM_NONZEROS:
            return self._solve_in_child(h, objective, what, start, time_limit_s, budget)
        if budget is not None:
            _watch(h, budget, time_limit_s, in_usd=self._in_usd(objective))
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible:
            raise InfeasibleError(f"no plan meets the constraints (deadline, budget) while finding {what}")
        info = h.getInfo()
        found = info.primal_solution_status == 2  # kSolutionStatusFeasible
        if status in _stopped() and not found and start is not None:
            # Stopped before HiGHS even completed the start: the start is the plan, its bound HiGHS's.
            self.bound = float(info.mip_dual_bound)
            return self._stage_values(start)
        if status != highspy.HighsModelStatus.kOptimal and not (status in _stopped() and found):
            # HiGHS's own words for a stop at the deadline ("Interrupted by user") would mislead
            if status in _stopped():
                raise _out_of_time(what, "", float(time_limit_s or 0.0))
            raise PlanningError(f"the solver stopped before finding {what}: {h.modelStatusToString(status)}")
        x = np.asarray(h.getSolution().col_value)
        reported = info.objective_function_value
        if status == highspy.HighsModelStatus.kOptimal:
            if start is not None and abs(float(objective @ x) - reported) > 1e-7 * max(1.0, abs(reported)):
                # HiGHS 1.16 can report the optimum yet hand back the start's values (seen when presolve
                # solves the whole model); the optimum is then found again without the start.
                left = None if time_limit_s is None else max(time_limit_s - h.getRunTime(), 0.0)
                return self.solve(objective, what, time_limit_s=left)
            self.bound = float(objective @ x)
        else:
            self.bound = min(float(info.mip_dual_bound), float(objective @ x))
        return x

    def _solve_in_child(self, h: Any, objective: np.ndarray, what: str, start: list[int] | None,
                        time_limit_s: float, budget: Budget) -> np.ndarray:
        """`solve` of a large program in a child process ended at the time limit (see highs_child)."""
        from skyflow.planner.highs_child import run_in_child

        in_usd = self._in_usd(objective)
        started = None if start is None else evaluate(self.problem, self.choice(self._stage_values(start)))
        start_value = None if started is None else (started.total_usd if in_usd else started.hours)

        def progress(found: float | None, bound: float) -> None:
            best = found if found is not None else start_value
            if best is not None and best > 0:
                budget.report(_progress_line(best, bound, in_usd))

        outcome = run_in_child(h, budget.clock() + time_limit_s, budget.clock, progress)
        if outcome.status == "kInfeasible":
            raise InfeasibleError(f"no plan meets the constraints (deadline, budget) while finding {what}")
        if outcome.x is None or len(outcome.x) != len(self.lb):
            if start is None:
                why = f": {outcome.error}" if outcome.error else ""
                raise _out_of_time(what, why, time_limit_s)
            self.bound = outcome.bound  # the start is the plan, its bound the search's
            return self._stage_values(start)
        x = outcome.x
        value = float(objective @ x)
        self.bound = value if outcome.status == "kOptimal" and outcome.bound >= value - 1e-7 * max(1.0, abs(value)) \
            else min(outcome.bound, value)
        return x

    def _in_usd(self, objective: np.ndarray) -> bool:
        """Whether ``objective`` is the plan's cost (else its finish time): the unit progress is told in."""
        return bool(np.array_equal(objective, self.cost_objective()))

    def relaxation(self, objective: np.ndarray, time_limit_s: float | None,
                   clock: Callable[[], float] | None = None) -> Relaxed | None:
        """The LP relaxation's optimum (a lower bound of the program's), or None when the time limit
        stopped it first. With ``clock`` the limit counts from this call, handing the program to HiGHS
        included (0.8 s of a 5,000-stage program's), else from HiGHS's start."""
        import highspy

        ends = None if time_limit_s is None or clock is None else clock() + time_limit_s
        h = _quiet_highs()
        # Dual simplex on the program as built: HiGHS's presolve took about two thirds of the LP's time on
        # the bench's 1,000-stage DAG (0.09 of 0.14 s) and removed little.
        _set_option(h, "presolve", "off")
        lp = self._highs_lp(objective)
        lp.integrality_ = []
        h.passModel(lp)
        if ends is not None and clock is not None:
            time_limit_s = ends - clock()
        if time_limit_s is not None:
            _set_option(h, "time_limit", max(float(time_limit_s), 0.0))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        solution = h.getSolution()
        return Relaxed(np.asarray(solution.col_value), float(h.getInfo().objective_function_value),
                       np.asarray(solution.col_dual))

    def surviving(self, relaxed: Relaxed, incumbent: float) -> list[np.ndarray]:
        """``keep`` less the options no plan cheaper than ``incumbent`` can use (reduced-cost fixing).

        For every plan x, cost(x) >= the LP optimum + the sum of each variable's reduced cost times its
        distance from the bound it sits at (the LP's duals certify it). So a plan placing stage s on an
        option whose reduced cost exceeds ``incumbent`` - the LP optimum costs more than ``incumbent``:
        dropping that option loses no plan that costs ``incumbent`` or less. A margin covers HiGHS's
        tolerances."""
        margin = _FIXING_MARGIN * max(1.0, abs(incumbent)) + _DUAL_TOLERANCE * len(self.lb)
        slack = incumbent - relaxed.value + margin
        out = []
        for s, opts in enumerate(self.keep):
            out.append(opts[relaxed.reduced_costs[self.x[s]] <= slack])
        return out

    def rounded(self, x: np.ndarray) -> list[int]:
        """Position in ``keep`` per stage of its largest (possibly fractional) stage variable."""
        return [int(np.argmax(x[self.x[s]])) for s in range(len(self.keep))]

    def _stage_values(self, start: list[int]) -> np.ndarray:
        """A plan's stage variables, the rest left at 0 (no second solve to fill them in, which on a
        large program could take longer than the budget): callers price it with `evaluate`."""
        x = np.zeros(len(self.lb))
        index, value = self._start_values(start)
        x[index] = value
        return x

    def _highs_lp(self, objective: np.ndarray) -> highspy.HighsLp:
        import highspy

        start, index, value = self._columns()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.lb), len(self.rows)
        lp.col_cost_ = objective
        lp.col_lower_, lp.col_upper_ = np.array(self.lb), np.array(self.ub)
        _, lower, upper = zip(*self.rows, strict=True) if self.rows else ((), (), ())
        lp.row_lower_, lp.row_upper_ = np.array(lower, dtype=float), np.array(upper, dtype=float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[i] for i in self.integer]
        return lp

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The constraint matrix column-wise (starts, row indices, values), repeated entries summed."""
        n_rows = len(self.rows)
        lengths = np.fromiter((len(terms) for terms, _, _ in self.rows), dtype=np.int64, count=n_rows)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
        # variable, coefficient, variable, ... as one float array (variable numbers are exact in a float)
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(terms for terms, _, _ in self.rows)), dtype=float)
        keys = flat[0::2].astype(np.int64) * n_rows + rows
        order = np.argsort(keys, kind="stable")  # by column, then row; a repeated entry keeps its order
        keys, vals = keys[order], flat[1::2][order]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
        summed = np.add.reduceat(vals, first) if len(keys) else np.zeros(0)
        keys = keys[first]
        per_col = np.bincount(keys // n_rows, minlength=len(self.lb)) if len(keys) else np.zeros(len(self.lb), int)
        return np.r_[0, np.cumsum(per_col)].astype(np.int32), (keys % n_rows).astype(np.int32), summed

    def _start_values(self, start: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The stage variables of a plan: 1 on each stage's chosen option, 0 on the others."""
        index = np.concatenate(self.x).astype(np.int32)
        value = np.concatenate([(opts == start[s]).astype(float) for s, opts in enumerate(self.keep)])
        return index, value

    def choice(self, x: np.ndarray) -> list[int]:
        return [int(self.keep[s][int(np.argmax(x[self.x[s]]))]) for s in range(len(self.keep))]


def _pair_rates(problem: Problem, cost: TransferCosts, sources: list[int],
                dests: list[int]) -> dict[tuple[str, str], float] | None:
    """`_rate_per_cloud_pair` over one transfer's sources and destinations, by cloud name."""
    src, dst = np.asarray(sources), np.asarray(dests)
    found = _rate_per_cloud_pair(problem, src, dst, cost[np.ix_(src, dst)])
    if found is None:
        return None
    names = problem.cloud_names
    return {(names[k], names[c]): rate for (k, c), rate in found.items()}


def _rate_per_cloud_pair(problem: Problem, src: np.ndarray, dst: np.ndarray,
                         block: np.ndarray) -> dict[tuple[int, int], float] | None:
    """Over the pairs of two different locations in ``src`` x ``dst`` (``block``: their costs), the one rate of
    each (source cloud, target cloud) pair present, or None when a pair of clouds has two."""
    cloud = problem.loc_cloud
    width = int(cloud.max()) + 1
    pair = cloud[src][:, None] * width + cloud[dst][None, :]
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
    return {(int(k // width), int(k % width)): float(v) for k, v in zip(keys[starts], first, strict=True)}


def _progress_line(best: float, bound: float, in_usd: bool) -> str:
    """The search's best plan and proven bound, in dollars or (the time objective) hours."""
    shown = (f"${best:,.2f}", f"${bound:,.2f}") if in_usd else (f"{best:,.2f} h", f"{bound:,.2f} h")
    return f"integer program: best {shown[0]}, bound {shown[1]} (within {100 * max(best - bound, 0.0) / best:.2f}%)"


def _watch(h: Any, budget: Budget, time_limit_s: float | None, *, in_usd: bool) -> None:
    """Report the search's best plan and bound now and then, and stop it at its limit on the wall
    clock (HiGHS checks its own limit between steps, and a large program can overrun it)."""
    ends = None if time_limit_s is None else budget.clock() + time_limit_s
    last = [budget.clock()]

    def on_interrupt(event: Any) -> None:
        now = budget.clock()
        if ends is not None and now >= ends:
            event.interrupt()
        if now - last[0] >= _REPORT_EVERY_S:
            last[0] = now
            out = event.data_out
            best, bound = float(out.mip_primal_bound), float(out.mip_dual_bound)
            if np.isfinite(best) and np.isfinite(bound) and best > 0:
                budget.report(_progress_line(best, bound, in_usd))

    def on_lp_interrupt(event: Any) -> None:  # presolve and the root LP call no MIP callback
        if ends is not None and budget.clock() >= ends:
            event.interrupt()

    h.cbMipInterrupt.subscribe(on_interrupt)
    h.cbSimplexInterrupt.subscribe(on_lp_interrupt)
    h.cbIpmInterrupt.subscribe(on_lp_interrupt)


def _out_of_time(what: str, why: str, time_limit_s: float) -> PlanningError:
    """A search the time limit stopped before it found any plan (``why``: how, if it is known)."""
    return PlanningError(f"the solver stopped before finding {what}{why} (time limit {time_limit_s:g} s; "
                         "raise --time-limit, 0 for none)")


def _stopped() -> tuple[Any, ...]:
    import highspy

    status = highspy.HighsModelStatus
    return (status.kTimeLimit, status.kInterrupt, status.kIterationLimit, status.kSolutionLimit)


def _set_option(h: Any, name: str, value: float | bool | str) -> None:
    """Set a HiGHS option or fail: HiGHS answers an unknown name or a bad value with a status, not an
    exception, and a search left at its default relative gap (1e-4) would no longer be exact."""
    import highspy

    if h.setOptionValue(name, value) != highspy.HighsStatus.kOk:
        raise PlanningError(f"HiGHS rejected its option {name} = {value!r}")


def _quiet_highs() -> Any:
    """A HiGHS solver that prints nothing; HiGHS 1.16 writes a banner to fd 1 when constructed,
    which would corrupt `skyflow plan --json` and `skyflow run --json`."""
    import os
    import sys

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            solver = highspy.Highs()  # type: ignore[no-untyped-call]
            _set_option(solver, "output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return solver
