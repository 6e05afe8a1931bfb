"""Exact solvers: dominance pruning, then DP on forests or an integer program (HiGHS) on any DAG
(exact within its time limit; past it, the best plan found with its proven lower bound).

Egress depends only on the locations of a transfer's two ends, so each stage is reduced to its
cheapest option per location first. A location is then pruned when another option is no worse
for *every* placement of the neighbours (compute difference covers the largest egress gain);
swapping a pruned choice for its dominator never raises the cost, so the optimum survives.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from skyflow.planner.budget import Budget
from skyflow.planner.forest import forest_marginals
from skyflow.planner.problem import Problem, evaluate

if TYPE_CHECKING:
    from skyflow.planner.milp import MilpModel, Relaxed

# The forest relaxation's bound and its bounds per placement (forest_marginals).
Forest = tuple[float, list[np.ndarray]]
# The whole local search from a plan, over the options given: (plan, options) -> a plan no dearer.
Polish = Callable[[list[int], list[np.ndarray]], list[int]]

_PRUNE_AGAINST = 8  # each option is tested against this many of the stage's cheapest
_EPS = 1e-9
# Under a time limit the cost search still gets this much when the fastest plan took the budget.
_LAST_SOLVE_S = 0.5
# Programs of this many stages or more, under a time limit, start from the LP relaxation too.
_GUIDED_FROM_STAGES = 500
# The integer program runs only with this many times the LP relaxation's time (and search) left.
_MILP_OVER_LP = 2.0
# The LP relaxation may take this share of what is left of the budget.
_LP_SHARE = 0.4
# Building the program took 0.6 to 1.2 times as long as finding the start (the forest relaxation and the moves
# from its optimum; the bench's random DAGs of 1,000 to 10,000 stages, realistic1000 and realistic5000): with no
# more than this many times the start's time left, the program is not built.
_BUILD_OVER_SEARCH = 3.0
# Its LP relaxation took, per nonzero of the program, 0.26 to 0.35 times the start's seconds per placement on the
# random DAGs of 1,000 to 5,000 stages, 0.56 on realistic1000 and 1.15 on realistic5000: the LP is solved only
# when this estimate of its time fits in its share of what is left. Otherwise it would not finish, nor would
# HiGHS (which begins with it), and the start comes back with the forest bound.
_LP_PER_NONZERO = 0.5
# After the search, freeing its program took about as long as building it, and pricing and assembling the plan
# about as long again (a 5,000-stage DAG: 0.1 s and 0.25 s after a 0.25 s build, past the 5 % reserve): the
# cost search keeps back this many times the program's building time from its time limit.
_AFTER_OVER_BUILD = 2.0
# An option stays unless a lower bound of every plan using it exceeds the start's cost by this share (and as
# many dollars): the forest relaxation's sums are exact but for floating point.
_FIXING_SLACK = 1e-9


def cheapest_per_location(problem: Problem) -> list[np.ndarray]:
    """Option indices per stage: the cheapest at each location (options come sorted by cost)."""
    keep = []
    for locs in problem.opt_loc:
        _, first = np.unique(locs, return_index=True)
        keep.append(np.sort(first))
    return keep


def merge_interchangeable(problem: Problem, keep: list[np.ndarray]) -> list[np.ndarray]:
    """Keep one representative of locations no plan can tell apart, dropping the others' options.

    Locations u and v are interchangeable when every stage has the same options (compute cost
    and hours) at both and egress to and from every other location is priced the same. Moving
    every stage from v to u then never costs more: egress from and to the rest is unchanged,
    transfers between u and v vanish, and consumers of one artifact that sat at both now share
    one transfer. So the optimum survives with v dropped (exact, for cost and time alike).
    """
    n = len(problem.locations)
    fixed = {problem.loc_index[t.source] for t in problem.transfers if t.source is not None}
    groups: dict[bytes, list[int]] = defaultdict(list)
    for loc, signature in _signatures(problem, keep):
        if loc not in fixed:
            groups[signature].append(loc)
    ids = problem.tier_ids()
    dropped = np.zeros(n, dtype=bool)
    for members in groups.values():
        if len(members) > 1:
            for _rep, others in _same_egress(ids, members):
                dropped[others] = True
    if not dropped.any():
        return keep
    return [opts[~dropped[problem.opt_loc[s][opts]]] for s, opts in enumerate(keep)]


def _signatures(problem: Problem, keep: list[np.ndarray]) -> list[tuple[int, bytes]]:
    """(location, what every stage can do there: its (stage, compute, hours) options in order, as bytes) for
    each location some stage can use; equal bytes, equal options (-0.0 is taken as 0.0)."""
    if not any(len(k) for k in keep):
        return []
    stage = np.repeat(np.arange(len(keep), dtype=np.int64), [len(k) for k in keep])
    loc = np.concatenate([problem.opt_loc[s][k] for s, k in enumerate(keep)])
    compute = np.concatenate([problem.opt_compute[s][k] for s, k in enumerate(keep)]) + 0.0
    hours = np.concatenate([problem.opt_hours[s][k] for s, k in enumerate(keep)]) + 0.0
    order = np.lexsort((hours, compute, stage, loc))
    loc, stage, compute, hours = loc[order], stage[order], compute[order], hours[order]
    bounds = np.r_[0, np.flatnonzero(loc[1:] != loc[:-1]) + 1, len(loc)].tolist()
    return [(int(loc[a]), stage[a:b].tobytes() + compute[a:b].tobytes() + hours[a:b].tobytes())
            for a, b in itertools.pairwise(bounds)]


def _same_egress(ids: np.ndarray, members: list[int]) -> list[tuple[int, list[int]]]:
    """(representative, the members priced exactly like it to and from every location outside them)."""
    inside = np.zeros(len(ids), dtype=bool)
    inside[members] = True
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for v in members:
        by_key[ids[v, ~inside].tobytes() + b"|" + ids[~inside, v].tobytes()].append(v)
    out = []
    for sub in by_key.values():
        rep, others = sub[0], sub[1:]
        rest = [w for w in members if w not in sub]  # members of the group left in other subgroups
        same = [v for v in others if np.array_equal(ids[v, rest], ids[rep, rest])
                and np.array_equal(ids[rest, v], ids[rest, rep])]
        if same:
            out.append((rep, same))
    return out


def prune_dominated(problem: Problem, keep: list[np.ndarray]) -> list[np.ndarray]:
    incoming: dict[int, list[int]] = defaultdict(list)
    outgoing: dict[int, list[int]] = defaultdict(list)
    for ti, t in enumerate(problem.transfers):
        if t.producer is not None:
            outgoing[t.producer].append(ti)
        for c in t.consumers:
            incoming[c].append(ti)
    at = [problem.opt_loc[s][opts] for s, opts in enumerate(keep)]
    out = []
    for s, opts in enumerate(keep):
        if len(opts) <= 1:
            out.append(opts)
            continue
        compute = problem.opt_compute[s][opts]
        locs = at[s]
        best = np.argsort(compute, kind="stable")[:_PRUNE_AGAINST]
        bound = np.zeros((len(best), len(opts)))
        for ti in incoming[s]:
            bound += _incoming_gain(problem, ti, locs[best], locs, at)
        for ti in outgoing[s]:
            bound += _outgoing_gain(problem, ti, locs[best], locs, at)
        slack = compute[best][:, None] + bound - compute[None, :]
        beats = slack <= _EPS
        # Among the reference options only an earlier one may prune a later one, so that ties
        # (the same price in many regions) collapse to one without two pruning each other.
        rank = np.full(len(opts), len(best))
        rank[best] = np.arange(len(best))
        beats &= np.arange(len(best))[:, None] < rank[None, :]
        dominated = np.any(beats, axis=0)
        out.append(opts[~dominated])
    return out


def _incoming_gain(problem: Problem, ti: int, b_locs: np.ndarray, l_locs: np.ndarray,
                   at: list[np.ndarray]) -> np.ndarray:
    """Largest extra egress of moving the consumer from l to b, over all producer locations (``at``: each
    stage's option locations)."""
    t = problem.transfers[ti]
    cost = problem.cost_matrix(t.size_gb)
    if t.producer is None:
        sources = np.array([problem.loc_index[t.source]])  # type: ignore[index]
    else:
        sources = at[t.producer]
    to_b = cost[sources[:, None], b_locs[None, :]]
    if len(t.consumers) > 1:  # l may share its transfer with another consumer: no saving to count
        return np.broadcast_to(to_b.max(axis=0)[:, None], (len(b_locs), len(l_locs)))
    to_l = cost[sources[:, None], l_locs[None, :]]
    return np.asarray((to_b[:, :, None] - to_l[:, None, :]).max(axis=0))


def _outgoing_gain(problem: Problem, ti: int, b_locs: np.ndarray, l_locs: np.ndarray,
                   at: list[np.ndarray]) -> np.ndarray:
    t = problem.transfers[ti]
    cost = problem.cost_matrix(t.size_gb)
    # sorted(set()), not np.unique: on numpy 2 its first call imports numpy.ma (15 ms of a small plan).
    dests = np.array(sorted({int(v) for c in t.consumers for v in at[c].tolist()}), dtype=np.int64)
    from_b = cost[b_locs[:, None], dests[None, :]]
    from_l = cost[l_locs[:, None], dests[None, :]]
    gain = np.maximum((from_b[:, None, :] - from_l[None, :, :]).max(axis=2), 0.0)
    return np.asarray(gain * min(len(t.consumers), len(dests)))


@dataclass(frozen=True)
class Bounded:
    """A plan (option index per stage) and what was proven about it: lower bounds of its cost and,
    under a time objective, of its hours (None where it is proven optimal)."""

    choice: list[int]
    cost_bound: float | None = None
    hours_bound: float | None = None


def solve_milp(problem: Problem, keep: list[np.ndarray], *, with_time: bool = False,
               deadline_h: float | None = None, max_cost_usd: float | None = None,
               start: list[int] | None = None) -> list[int]:
    """The cheapest plan by the integer program, solved to optimality (gap 0). With time: finish-time
    variables along the DAG.

    ``start`` (option index per stage, each in ``keep``) is a feasible plan to begin the search from;
    it only speeds the search up, the result is optimal with or without it.
    """
    return solve_milp_bounded(problem, keep, with_time=with_time, deadline_h=deadline_h,
                              max_cost_usd=max_cost_usd, start=start).choice


def solve_milp_bounded(problem: Problem, keep: list[np.ndarray], *, with_time: bool = False,
                       deadline_h: float | None = None, max_cost_usd: float | None = None,
                       minimize: str = "cost", start: list[int] | None = None,
                       budget: Budget | None = None, search_s: float = 0.0,
                       forest: Forest | None = None, polish: Polish | None = None) -> Bounded:
    """`solve_milp` within ``budget`` (None: no limit, prove optimality):
    the best plan found and its proven bounds. Under a time objective the fastest plan takes what it
    needs of the budget and the cheapest plan at that time the rest. ``search_s``: how long finding
    ``start`` took, the yardstick of what building the program and its LP relaxation take. ``forest``: the
    forest relaxation's bound and bounds per placement, when the caller has them. ``polish``: for a start not
    yet through the whole local search, the search from it (over the options given), run wherever the start
    would otherwise go to HiGHS or come back as it is (the LP relaxation's guided search stands in for it)."""
    from skyflow.planner.milp import MilpModel

    budget = budget or Budget(None)
    floor = _compute_floor(problem, keep)
    searched = _placements(keep)  # what the start was found among, in search_s
    # A plain cost search (no rows, no time objective) from a start: the forest bound may settle it before
    # any program is built, and the budget is watched while building (the start is the answer if it runs out).
    plain = start is not None and minimize == "cost" and not with_time and deadline_h is None and max_cost_usd is None
    guided = budget.limited and start is not None and minimize == "cost" and len(keep) >= _GUIDED_FROM_STAGES
    if plain:
        assert start is not None
        keep, floor, settled = _settled_before_the_program(problem, keep, start, floor, budget, search_s, forest)
        if settled is not None:
            if settled.cost_bound is not None:  # out of time: the start is the answer
                return Bounded(_polished(settled.choice, keep, polish), settled.cost_bound, None)
            return settled
    if start is not None and not guided:
        start, polish = _polished(start, keep, polish), None
    budget.report(f"building the integer program ({_placements(keep):,} placements)")
    per_placement = search_s / max(searched, 1)
    building = budget.clock()
    model = MilpModel(problem, keep, with_time=with_time, stop=budget.spent if plain and budget.limited else None,
                      fits=(lambda nonzeros: _lp_within_reach(nonzeros, per_placement, budget))
                      if plain and guided else None)
    built_s = budget.clock() - building
    if not model.complete:
        if model.outgrown is not None:
            budget.report(f"no time for the LP relaxation of over {model.outgrown:,} nonzeros; keeping the start "
                          "and the forest bound")
        else:
            budget.report("no time left to finish the integer program; keeping the start and the forest bound")
        assert start is not None
        return Bounded(_polished(start, keep, polish), floor, None)
    hours_bound = None
    if minimize == "time":
        if max_cost_usd is not None:
            model.add_row(model.cost_row(), hi=max_cost_usd)
        if deadline_h is not None:
            model.add_row(model.makespan_row(), hi=deadline_h)
        x = model.solve(model.makespan_objective(), what="the fastest plan", start=start, budget=budget)
        fastest = evaluate(problem, model.choice(x)).hours  # the plan's own hours (x may hold only its stages)
        proven = max(model.bound, _hours_floor(problem, keep))
        if proven < fastest - 1e-9 * max(1.0, fastest):
            hours_bound = proven
        model.add_row(model.makespan_row(), hi=fastest + 1e-6 * max(1.0, fastest))
        start = model.choice(x)  # feasible at that time: the cost search starts from it
    else:
        if deadline_h is not None:
            model.add_row(model.makespan_row(), hi=deadline_h)
        if max_cost_usd is not None:
            model.add_row(model.cost_row(), hi=max_cost_usd)
    if guided:
        assert start is not None
        if plain and not _lp_within_reach(nonzeros := model.nonzeros(), per_placement, budget):
            budget.report(f"no time for the LP relaxation of {nonzeros:,} nonzeros; keeping the start and the "
                          "forest bound")
            return Bounded(_polished(start, keep, polish), floor, None)
        lp_started = budget.clock()
        start, floor, relaxed = _lp_guided_start(problem, keep, model, start, budget, floor)
        if relaxed is None:
            start = _polished(start, keep, polish)
        narrowed = None
        if plain and relaxed is not None:
            narrowed = _narrowed(keep, model.surviving(relaxed, evaluate(problem, start).total_usd), start, budget,
                                 "the LP's reduced costs")
            if _only_the_starts(narrowed, budget):
                return Bounded(start, None, None)
            if _placements(narrowed) == _placements(keep):
                narrowed = None
        if (budget.for_search() or 0.0) < _MILP_OVER_LP * (budget.clock() - lp_started):
            # HiGHS would spend what is left setting up (presolve, its own root LP) and overrun the budget:
            # the start and the LP bound are the answer.
            budget.report("no time left for the integer program; keeping the best start and the LP bound")
            cost = evaluate(problem, start).total_usd
            return Bounded(start, floor if floor < cost - 1e-9 * max(1.0, cost) else None, hours_bound)
        if narrowed is not None:
            building = budget.clock()
            smaller = MilpModel(problem, narrowed, with_time=False, stop=budget.spent)
            if smaller.complete:  # else the whole program, already built, is searched
                model, built_s = smaller, budget.clock() - building
    x = model.solve(model.cost_objective(), what="the cheapest plan", start=start, budget=budget,
                    floor_s=_LAST_SOLVE_S, keep_back_s=_AFTER_OVER_BUILD * built_s)
    cost = evaluate(problem, model.choice(x)).total_usd
    bound = max(model.bound, floor)
    cost_bound = max(bound, 0.0) if bound < cost - 1e-9 * max(1.0, cost) else None
    return Bounded(model.choice(x), cost_bound, hours_bound)


def _settled_before_the_program(problem: Problem, keep: list[np.ndarray], start: list[int], floor: float,
                                budget: Budget, search_s: float,
                                forest: Forest | None) -> tuple[list[np.ndarray], float, Bounded | None]:
    """What the forest relaxation settles of a plain cost search from ``start`` before any program is built:
    its bound (the start is proven optimal when it costs no more), its bounds per placement (the options no
    plan as cheap as the start can use are dropped; the start is proven when only its own are left), then
    whether there is time to build and search a program over what is left (see _BUILD_OVER_SEARCH; building
    takes time in proportion to the placements). The options left, the floor, and the answer if settled."""
    bound, marginals = forest or forest_marginals(problem, keep)
    floor = max(floor, bound)
    cost = evaluate(problem, start).total_usd
    if floor >= cost - 1e-9 * max(1.0, cost):
        budget.report("the start costs no more than the forest relaxation's bound: proven optimal")
        return keep, floor, Bounded(start, None, None)
    limit = cost * (1 + _FIXING_SLACK) + _FIXING_SLACK
    left = _narrowed(keep, [k[m <= limit] for k, m in zip(keep, marginals, strict=True)], start, budget,
                     "the forest relaxation's bounds per placement")
    if _only_the_starts(left, budget):
        return left, floor, Bounded(start, None, None)
    share = _placements(left) / _placements(keep)
    if budget.short_of(_BUILD_OVER_SEARCH * search_s * share):
        budget.report("no time left to build the integer program; keeping the start and the forest bound")
        return left, floor, Bounded(start, floor, None)
    return left, floor, None


def _compute_floor(problem: Problem, keep: list[np.ndarray]) -> float:
    """No plan costs less than every stage on its cheapest option with no egress."""
    return float(sum(problem.opt_compute[s][k].min() for s, k in enumerate(keep) if len(k)))


def _hours_floor(problem: Problem, keep: list[np.ndarray]) -> float:
    """No plan finishes sooner than the DAG's longest path with every stage at its fastest option
    and no transfer time (stages come in topological order)."""
    preds: list[set[int]] = [set() for _ in keep]
    for t in problem.transfers:
        if t.producer is not None:
            for c in t.consumers:
                preds[c].add(t.producer)
    for a, b in problem.ordering:
        preds[b].add(a)
    finish = [0.0] * len(keep)
    for s, opts in enumerate(keep):
        fastest = float(problem.opt_hours[s][opts].min()) if len(opts) else 0.0
        finish[s] = max((finish[p] for p in preds[s]), default=0.0) + fastest
    return max(finish, default=0.0)


def _lp_within_reach(nonzeros: int, search_s_per_placement: float, budget: Budget) -> bool:
    """Whether the LP relaxation of a program of ``nonzeros`` would likely finish in its share of what is left
    (see _LP_PER_NONZERO). Asked while the program is built too: a program only grows, and what is left only
    shrinks, so one that is out of reach part-built stays out of reach."""
    left = budget.left()
    return left is None or _LP_PER_NONZERO * nonzeros * search_s_per_placement <= _LP_SHARE * left


def _lp_guided_start(problem: Problem, keep: list[np.ndarray], model: MilpModel, start: list[int],
                     budget: Budget, floor: float) -> tuple[list[int], float, Relaxed | None]:
    """On large programs under a time limit: the LP relaxation (its bound and optimum), and the local search
    begun from the relaxation rounded when that beats ``start`` (it often lands on another, cheaper, basin)."""
    from skyflow.planner.search import good_start

    budget.report("solving the LP relaxation for a bound and a second start")
    relaxed = model.relaxation(model.cost_objective(), budget.share(_LP_SHARE), budget.clock)
    if relaxed is None:
        return start, floor, None
    budget.report(f"LP bound ${relaxed.value:,.2f}; searching from its rounding")
    guided = good_start(problem, keep, model.rounded(relaxed.x), budget=budget)
    if evaluate(problem, guided).total_usd < evaluate(problem, start).total_usd:
        start = guided
    return start, max(floor, relaxed.value), relaxed


def _narrowed(keep: list[np.ndarray], surviving: list[np.ndarray], start: list[int], budget: Budget,
              by: str) -> list[np.ndarray]:
    """``surviving`` (the options of ``keep`` that a plan no dearer than ``start`` can use, as ``by`` shows),
    the start's own always among them (only floating point could drop one), and a report of what is left."""
    out = [opts if start[s] in opts else np.sort(np.append(opts, start[s])) for s, opts in enumerate(surviving)]
    budget.report(f"{by} leave {_placements(out):,} of {_placements(keep):,} placements")
    return out


def _polished(start: list[int], keep: list[np.ndarray], polish: Polish | None) -> list[int]:
    """``start`` through the whole local search over ``keep`` when it has not been (``polish``), else as it is."""
    return start if polish is None else polish(start, keep)


def _only_the_starts(narrowed: list[np.ndarray], budget: Budget) -> bool:
    """Whether `_narrowed` left each stage only the start's own option (the start is then proven optimal)."""
    if any(len(k) > 1 for k in narrowed):
        return False
    budget.report("no other placement can do better: the start is proven optimal")
    return True


def _placements(keep: list[np.ndarray]) -> int:
    return sum(len(k) for k in keep)
