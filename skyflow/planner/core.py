"""plan_pipeline: the pure entry point from (pipeline, catalog, egress, policy) to a Plan."""

from __future__ import annotations

import dataclasses

import numpy as np

from skyflow.catalog import EgressModel, PriceCatalog
from skyflow.errors import PlanningError
from skyflow.planner.candidates import CandidateFinder, stage_placements
from skyflow.planner.milp import InfeasibleError
from skyflow.planner.plan import Alternative, Placement, Plan
from skyflow.planner.plan_warnings import plan_warnings
from skyflow.planner.policy import Policy
from skyflow.planner.problem import Problem, build_problem, evaluate
from skyflow.planner.reasons import infeasible_error
from skyflow.planner.search import good_start
from skyflow.planner.solve import (
    cheapest_per_location,
    is_forest,
    merge_interchangeable,
    prune_dominated,
    solve_forest,
    solve_milp,
)
from skyflow.spec.graph import ResolvedPipeline


def plan_pipeline(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
                  policy: Policy | None = None, *, baseline: bool = True) -> Plan:
    """The exact optimum under ``policy``: cheapest (by default), fastest, or within deadline/budget."""
    policy = policy or Policy()
    finder = CandidateFinder(catalog, policy)
    problem, warnings = _problem(pipeline, catalog, egress, policy, finder)
    choice, solver = solve(problem, policy)
    result = evaluate(problem, choice)
    stages = {name: problem.options[s][choice[s]] for s, name in enumerate(problem.names)}
    base_usd, base_cloud = (_baseline(pipeline, catalog, egress, policy) if baseline else (None, None))
    reused = baseline and any(p.cached for p in stages.values())
    return Plan(
        pipeline=pipeline.name, objective=policy.minimize, stages=stages,
        egress=result.egress, total_usd=result.total_usd, total_hours=result.hours,
        baseline_usd=base_usd, baseline_cloud=base_cloud,
        warnings=tuple(warnings + plan_warnings(pipeline, stages, finder)), solver=solver,
        recompute_usd=_recompute_usd(pipeline, catalog, egress, policy) if reused else None,
        stats={"options": float(sum(len(o) for o in problem.options))},
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


def solve(problem: Problem, policy: Policy) -> tuple[list[int], str]:
    """Option index per stage, and which solver found it."""
    keep = merge_interchangeable(problem, cheapest_per_location(problem))
    if not policy.uses_time:
        keep = prune_dominated(problem, keep)
        if all(len(k) == 1 for k in keep):
            return [int(k[0]) for k in keep], "trivial"
        if is_forest(problem):
            return solve_forest(problem, keep), "dp"
        return solve_milp(problem, keep, start=good_start(problem, keep)), "milp"
    keep = merge_interchangeable(problem, [_all_options(problem, s) for s in range(len(problem.names))])
    try:
        choice = solve_milp(problem, keep, with_time=True, deadline_h=policy.deadline_h,
                            max_cost_usd=policy.max_cost_usd, minimize=policy.minimize)
    except InfeasibleError:
        raise infeasible_error(problem, keep, policy) from None
    return choice, "milp"


def _all_options(problem: Problem, s: int) -> np.ndarray:
    return np.arange(len(problem.options[s]))


def _baseline(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
              policy: Policy) -> tuple[float | None, str | None]:
    """The cheapest plan that runs every stage on one cloud, on demand (what one would do by hand).

    It reuses the same cached outputs the plan may reuse, wherever they are, so that the saving
    compares where stages run, not what the cache spared (that is `Plan.recompute_usd`).
    """
    best: tuple[float | None, str | None] = (None, None)
    on_demand = _on_demand(pipeline)
    for cloud in policy.clouds_considered(catalog.clouds):
        single = dataclasses.replace(policy, objective="cost", deadline_h=None, max_cost_usd=None,
                                     allowed_clouds=(cloud,), all_clouds=True,
                                     infra=tuple(e for e in policy.infra or (cloud,) if e.split("/")[0] == cloud))
        try:
            problem, _ = _problem(on_demand, catalog, egress, single)
            choice, _ = solve(problem, single)
        except PlanningError:
            continue
        total = evaluate(problem, choice).total_usd
        if best[0] is None or total < best[0]:
            best = (total, cloud)
    return best


def _recompute_usd(pipeline: ResolvedPipeline, catalog: PriceCatalog, egress: EgressModel,
                   policy: Policy) -> float | None:
    """The cost of the plan the same policy gives when no cached output is reused (None: no such plan)."""
    fresh = dataclasses.replace(policy, cached={})
    try:
        problem, _ = _problem(pipeline, catalog, egress, fresh)
        choice, _ = solve(problem, fresh)
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
