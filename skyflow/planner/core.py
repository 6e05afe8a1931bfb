"""plan_pipeline: the pure entry point from (pipeline, catalog, egress, policy) to a Plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyflow.catalog import EgressModel, PriceCatalog
from skyflow.errors import PlanningError
from skyflow.planner.budget import Budget, Progress
from skyflow.planner.candidates import CandidateFinder, stage_placements
from skyflow.planner.collector import collector_paused
from skyflow.planner.components import independent_parts, part_problem
from skyflow.planner.forest import forest_marginals, is_forest, solve_forest
from skyflow.planner.milp import InfeasibleError
from skyflow.planner.plan import Alternative, Placement, Plan
from skyflow.planner.plan_warnings import plan_warnings
from skyflow.planner.policy import Policy
from skyflow.planner.problem import Problem, build_problem, evaluate
from skyflow.planner.reasons import infeasible_error
from skyflow.planner.search import descent_from, good_start, positions_of
from skyflow.planner.solve import (
    cheapest_per_location,
    merge_interchangeable,
    prune_dominated,
    solve_milp_bounded,
)
from skyflow.spec.graph import ResolvedPipeline

# Of the time limit, the baseline (every stage on one cloud) may take this share of what is left.
_BASELINE_SHARE = 0.15


@collector_paused()
def plan_pipeline(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
                  policy: Policy | None = None, *, baseline: bool = True, started: float | None = None,
                  clock: Callable[[], float] | None = None, progress: Progress | None = None) -> Plan:
    """The exact optimum under ``policy``: cheapest (by default), fastest, or within deadline/budget.

    ``policy.time_limit_s`` bounds the whole call, counted from ``started`` on ``clock`` (default: now,
    on ``time.monotonic``); past it the best plan found comes back with its proven bound and gap.
    ``progress`` hears what planning is doing (one line at a time), for a caller that shows it.
    """
    policy = policy or Policy()
    budget = Budget(policy.solver_time_limit_s, clock=clock, started=started, progress=progress)
    finder = CandidateFinder(catalog, policy)
    budget.report(f"finding candidates for {len(pipeline.order)} stages")
    problem, warnings = _problem(pipeline, catalog, egress, policy, finder)
    base_usd, base_cloud = (_baseline(pipeline, catalog, egress, policy, budget.part(_BASELINE_SHARE))
                            if baseline else (None, None))
    solved = solve(problem, policy, budget)
    choice, solver = solved.choice, solved.solver
    result = evaluate(problem, choice)
    stages = {name: problem.options[s][choice[s]] for s, name in enumerate(problem.names)}
    reused = baseline and any(p.cached for p in stages.values())
    return Plan(
        pipeline=pipeline.name, objective=policy.minimize, stages=stages,
        egress=result.egress, total_usd=result.total_usd, total_hours=result.hours,
        baseline_usd=base_usd, baseline_cloud=base_cloud,
        warnings=tuple(warnings + plan_warnings(pipeline, stages, finder)), solver=solver,
        recompute_usd=_recompute_usd(pipeline, catalog, egress, policy, budget.part(1.0)) if reused else None,
        stats={"options": float(sum(len(o) for o in problem.options)), "planning_s": budget.elapsed()},
        **_bounds(solved, result.total_usd, result.hours, policy.minimize),
    )


def _problem(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
             policy: Policy, finder: CandidateFinder | None = None) -> tuple[Problem, list[str]]:
    finder = finder or CandidateFinder(catalog, policy)
    options: dict[str, list[Placement]] = {}
    warnings: list[str] = []
    for name in pipeline.order:
        options[name], found = stage_placements(name, pipeline.stages[name], finder)
        warnings += found
    problem, more = build_problem(pipeline, options, egress, policy)
    return problem, warnings + more


@dataclass(frozen=True)
class Solved:
    """Option index per stage, which solver found it, and its proven bounds (None: proven optimal)."""

    choice: list[int]
    solver: str
    cost_bound: float | None = None
    hours_bound: float | None = None


def solve(problem: Problem, policy: Policy, budget: Budget | None = None) -> Solved:
    """The plan, exact unless the integer program ran out of the budget (default: ``policy.time_limit_s``)."""
    budget = budget or Budget(policy.solver_time_limit_s)
    keep = merge_interchangeable(problem, cheapest_per_location(problem))
    if not policy.uses_time:
        keep = prune_dominated(problem, keep)
        if all(len(k) == 1 for k in keep):
            return Solved([int(k[0]) for k in keep], "trivial")
        parts = independent_parts(problem)
        if len(parts) > 1:
            return _solve_parts(problem, keep, parts, budget)
        return _cheapest(problem, keep, budget)
    keep = merge_interchangeable(problem, [_all_options(problem, s) for s in range(len(problem.names))])
    # Without a deadline or budget every plan is feasible: a cheap one is there to return if the
    # budget runs out before HiGHS finds its own (with them, none is known to be feasible).
    start: list[int] | None = None
    if budget.limited and not policy.deadline_h and not policy.max_cost_usd:
        start = good_start(problem, keep, budget=budget)
    try:
        found = solve_milp_bounded(problem, keep, with_time=True, deadline_h=policy.deadline_h,
                                   max_cost_usd=policy.max_cost_usd, minimize=policy.minimize, start=start,
                                   budget=budget)
    except InfeasibleError:
        raise infeasible_error(problem, keep, policy, budget.part(1.0)) from None
    return Solved(found.choice, "milp", found.cost_bound, found.hours_bound)


def _cheapest(problem: Problem, keep: list[np.ndarray], budget: Budget) -> Solved:
    """The cheapest plan of one connected problem: the DP on a forest, else the integer program."""
    if all(len(k) == 1 for k in keep):
        return Solved([int(k[0]) for k in keep], "trivial")
    if is_forest(problem):
        return Solved(solve_forest(problem, keep), "dp")
    budget.report(f"searching {sum(len(k) for k in keep):,} placements of {len(keep):,} stages for a start")
    began = budget.clock()
    forest = forest_marginals(problem, keep)
    start = descent_from(problem, keep, [int(np.argmin(m)) for m in forest[1]], budget=budget)

    def polish(plan: list[int], options: list[np.ndarray]) -> list[int]:
        return good_start(problem, options, positions_of(plan, options), budget=budget)

    found = solve_milp_bounded(problem, keep, start=start, budget=budget, search_s=budget.clock() - began,
                               forest=forest, polish=polish)
    return Solved(found.choice, "milp", found.cost_bound)


def _solve_parts(problem: Problem, keep: list[np.ndarray], parts: list[list[int]], budget: Budget) -> Solved:
    """The cheapest plan as the cheapest plan of each independent part; each part's share of the budget
    is its share of the placements still to plan. The smallest go first: they finish well inside their
    share, and the largest then gets what they left rather than overrunning the whole call's limit by
    their time. The bound is the sum of the parts' bounds."""
    budget.report(f"planning {len(parts):,} independent parts")
    choice = [0] * len(problem.names)
    solvers: set[str] = set()
    bound, proven = 0.0, True
    left = sum(len(k) for k in keep)
    sized = sorted(((sum(len(keep[s]) for s in part), part) for part in parts), key=lambda item: item[0])
    for size, part in sized:
        sub, sub_keep = part_problem(problem, part), [keep[s] for s in part]
        solved = _cheapest(sub, sub_keep, budget.part(size / left) if left else budget)
        left -= size
        for s, option in zip(part, solved.choice, strict=True):
            choice[s] = option
        solvers.add(solved.solver)
        if solved.cost_bound is None:
            bound += evaluate(sub, solved.choice).total_usd
        else:
            bound, proven = bound + solved.cost_bound, False
    solver = next(name for name in ("milp", "dp", "trivial") if name in solvers)
    return Solved(choice, solver, None if proven else bound)


def _bounds(solved: Solved, total_usd: float, hours: float, minimize: str) -> dict[str, Any]:
    """Plan fields for a plan not proven optimal: its lower bounds and the relative gap of what it minimizes
    (under a time objective the larger of the fastest time's gap and the cost's gap at that time)."""
    out: dict[str, Any] = {}
    gaps = [0.0]
    if solved.cost_bound is not None:
        out["lower_bound_usd"] = min(solved.cost_bound, total_usd)
        gaps.append(_relative_gap(total_usd, out["lower_bound_usd"]))
    if solved.hours_bound is not None and minimize == "time":
        out["lower_bound_hours"] = min(solved.hours_bound, hours)
        gaps.append(_relative_gap(hours, out["lower_bound_hours"]))
    if max(gaps) > 0:
        out["gap"] = max(gaps)
    return out


def _relative_gap(value: float, bound: float) -> float:
    return 0.0 if value <= 0 else max(value - bound, 0.0) / value


def _all_options(problem: Problem, s: int) -> np.ndarray:
    return np.arange(len(problem.options[s]))


def _baseline(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
              policy: Policy, budget: Budget) -> tuple[float | None, str | None]:
    """The cheapest plan that runs every stage on one cloud, on demand (what one would do by hand).

    It reuses the same cached outputs the plan may reuse, wherever they are, so that the saving
    compares where stages run, not what the cache spared (that is `Plan.recompute_usd`). Candidates
    are found once over every cloud, within the same `--infra` as the plan's (so an ordered stage's
    first choice is one the plan could take), and kept per cloud. Under a time limit it gets a share of the
    budget; a cloud's plan not proven cheapest by then is still a plan on that cloud.
    """
    best: tuple[float | None, str | None] = (None, None)
    on_demand = _on_demand(pipeline)
    clouds = policy.clouds_considered(catalog.clouds)
    budget.report(f"pricing the baseline: every stage on one of {len(clouds)} clouds")
    anywhere = dataclasses.replace(policy, objective="cost", deadline_h=None, max_cost_usd=None,
                                   allowed_clouds=clouds, all_clouds=True)
    finder = CandidateFinder(catalog, anywhere)
    try:
        options = {name: stage_placements(name, on_demand.stages[name], finder)[0] for name in on_demand.order}
    except PlanningError:
        return best
    for i, cloud in enumerate(clouds):
        single = dataclasses.replace(anywhere, allowed_clouds=(cloud,),
                                     infra=tuple(e for e in policy.infra or (cloud,) if e.split("/")[0] == cloud))
        on = _on_cloud(single, cloud)
        kept = {name: [p for p in opts if p.cached or on(p)] for name, opts in options.items()}
        if not all(kept.values()):
            continue
        problem, _ = build_problem(on_demand, kept, egress, single)
        choice = solve(problem, single, budget.part(1 / (len(clouds) - i))).choice
        total = evaluate(problem, choice).total_usd
        if best[0] is None or total < best[0]:
            best = (total, cloud)
    return best


def _on_cloud(policy: Policy, cloud: str) -> Callable[[Placement], bool]:
    """Whether a placement is on ``cloud`` in a region ``policy`` allows (asked once per region: every stage's
    candidates ask again about the same few regions)."""
    allowed: dict[str, bool] = {}

    def on(p: Placement) -> bool:
        if p.cloud != cloud:
            return False
        region = p.region or ""
        found = allowed.get(region)
        if found is None:
            found = allowed[region] = policy.region_allowed(cloud, region)
        return found

    return on


def _recompute_usd(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
                   policy: Policy, budget: Budget) -> float | None:
    """The cost of the plan the same policy gives when no cached output is reused (None: no such plan)."""
    fresh = dataclasses.replace(policy, cached={})
    try:
        problem, _ = _problem(pipeline, catalog, egress, fresh)
        choice = solve(problem, fresh, budget).choice
    except PlanningError:
        return None
    return evaluate(problem, choice).total_usd


def _on_demand(pipeline: ResolvedPipeline) -> ResolvedPipeline:
    stages = {}
    for name, stage in pipeline.stages.items():
        res = stage.resources
        alts = tuple(a.model_copy(update={"use_spot": False}) for a in res.any_of)
        ordered = tuple(a.model_copy(update={"use_spot": False}) for a in res.ordered)
        stages[name] = stage.model_copy(update={"resources": res.model_copy(
            update={"use_spot": False, "any_of": alts, "ordered": ordered})})
    spec = pipeline.spec.model_copy(update={"stages": stages})
    return dataclasses.replace(pipeline, spec=spec)


@collector_paused()
def explain_stage(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel, policy: Policy,
                  plan: Plan, stage: str, limit: int = 5) -> list[Alternative]:
    """The next best placements of ``stage`` with every other stage where ``plan`` put it."""
    if stage not in pipeline.stages:
        from skyflow.matching import close_matches

        matches = close_matches(stage, list(pipeline.stages))
        hint = f" Did you mean {', '.join(matches)}?" if matches else ""
        raise PlanningError(f"no stage {stage!r} in pipeline {pipeline.name!r}.{hint}", stage=stage)
    problem, _ = _problem(pipeline, catalog, egress, policy)
    chosen = [problem.options[s].index(plan.stages[name]) for s, name in enumerate(problem.names)]
    current = evaluate(problem, chosen)
    s = problem.names.index(stage)
    out = []
    for k in _cheapest_per_location_and_kind(problem, s):
        if int(k) == chosen[s]:
            continue
        trial = list(chosen)
        trial[s] = int(k)
        result = evaluate(problem, trial)
        out.append(Alternative(
            placement=problem.options[s][int(k)], total_usd=result.total_usd,
            delta_usd=result.total_usd - current.total_usd,
            delta_compute_usd=result.compute_usd - current.compute_usd,
            delta_egress_usd=(result.total_usd - result.compute_usd) - (current.total_usd - current.compute_usd),
            delta_hours=result.hours - current.hours))
    out.sort(key=lambda a: (a.delta_usd, a.delta_hours, a.placement.infra))
    return out[:limit]


def _cheapest_per_location_and_kind(problem: Problem, s: int) -> list[int]:
    """Stage ``s``'s cheapest option per location, reusing a cached copy and recomputing apart:
    when the cached copy wins, recomputing where it sits is still an alternative worth showing."""
    seen: set[tuple[str, bool]] = set()
    out = []
    for k, p in enumerate(problem.options[s]):  # sorted by cost
        if (p.infra, p.cached) not in seen:
            seen.add((p.infra, p.cached))
            out.append(k)
    return out
