"""The planner's plans equal brute force over every combination on small random DAGs and catalogs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import catalog, offer, pipeline, rules

from skyflow.errors import PlanningError
from skyflow.planner import CachedCopy, Policy, PoolLocation, plan_pipeline, solve
from skyflow.planner.core import _problem
from skyflow.planner.problem import evaluate

LOCATIONS = ["aws/a", "aws/b", "gcp/a", "gcp/b", "lambda/a"]
KINDS = ["cpu", "A100", "L4"]


@st.composite
def cases(draw: Any) -> tuple[Any, ...]:
    offers = []
    for loc in LOCATIONS:
        for kind in KINDS:
            if draw(st.booleans()):
                hours_price = draw(st.integers(1, 40)) / 4
                acc = None if kind == "cpu" else kind
                offers.append(offer(loc, f"{kind}-{loc}", hours_price, acc=acc, count=1 if acc else 0))
    if draw(st.booleans()):  # a twin region priced like aws/a: the solver may merge the two
        offers += [offer("aws/c", o.instance_type, o.price, acc=o.accelerator_name, count=o.accelerator_count)
                   for o in offers if o.region == "a" and o.cloud == "aws"]
    n = draw(st.integers(2, 5))
    stages: dict[str, Any] = {}
    for i in range(n):
        parents = [f"s{j}" for j in range(i) if draw(st.integers(0, 2)) == 0]
        kind = draw(st.sampled_from(KINDS))
        spec: dict[str, Any] = {"outputs": {"o": draw(st.sampled_from([0, 5, 40, 200]))},
                                "inputs": {f"i{j}": f"{p}.o" for j, p in enumerate(parents)},
                                "estimate": draw(st.integers(1, 4))}
        if kind != "cpu":
            spec["resources"] = {"accelerators": f"{kind}:1"}
        if draw(st.integers(0, 3)) == 0:
            spec["num_nodes"] = 2
        stages[f"s{i}"] = spec
    if draw(st.booleans()):
        stages["s0"]["inputs"] = {"raw": "raw"}
    inputs = {"raw": {"uri": "s3://b/raw", "infra": draw(st.sampled_from(LOCATIONS)), "size_gb": 50}}
    rate_rules = [(a, b, draw(st.sampled_from([0.0, 0.01, 0.05, 0.1])))
                  for a, b in [("aws", "aws"), ("gcp", "gcp"), ("aws", "*"), ("gcp", "*"), ("*", "*")]]
    if draw(st.booleans()):  # a region-pair rule breaks the per-cloud structure the MILP exploits
        rate_rules.insert(0, ("aws/a", "gcp/b", draw(st.sampled_from([0.0, 0.2]))))
    pools = draw(st.lists(pool_locations(), max_size=2, unique_by=lambda pool: pool.name))
    # Outputs some stages already have somewhere (an earlier run): reused for egress alone, or recomputed.
    cached = {name: tuple(CachedCopy(loc, 1.0) for loc in draw(st.lists(
        st.sampled_from([*LOCATIONS, "local", *(pool.name for pool in pools)]), min_size=1, max_size=2, unique=True)))
        for name in stages if draw(st.integers(0, 2)) == 0}
    return (catalog(*offers), pipeline(stages, inputs if "raw" in stages["s0"]["inputs"] else None),
            rules(*rate_rules), tuple(pools), cached)


@st.composite
def pool_locations(draw: Any) -> PoolLocation:
    kind = draw(st.sampled_from(["ssh", "kubernetes"]))
    accs = {draw(st.sampled_from(["A100", "L4"])): 1} if draw(st.booleans()) else {}
    return PoolLocation(
        name=f"{kind}/{draw(st.sampled_from(['lab', 'gke']))}", kind=kind, max_nodes=draw(st.integers(1, 2)),
        cpus=8, memory_gb=32, accelerators=accs, hourly_usd=draw(st.integers(0, 20)) / 4,
        cpu_hourly_usd=draw(st.sampled_from([0.0, 0.1, 0.5])), memory_gb_hourly_usd=0.01,
        accelerators_hourly_usd={"A100": 2.0, "L4": 0.5},
        egress_location=draw(st.sampled_from([None, *LOCATIONS])))


def _brute_force(p: Any, cat: Any, egress: Any, policy: Policy) -> float | None:
    problem, _ = _problem(p, cat, egress, policy)
    best = None
    for choice in itertools.product(*[range(len(o)) for o in problem.options]):
        result = evaluate(problem, list(choice))
        if policy.deadline_h is not None and result.hours > policy.deadline_h + 1e-9:
            continue
        if best is None or result.total_usd < best:
            best = result.total_usd
    return best


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([None, None, 4.0, 8.0, 14.0]), st.sampled_from([1, 2, 8]))
def test_cost_optimum_matches_brute_force(case: tuple[Any, ...], deadline: float | None, against: int) -> None:
    # Few reference options make dominance pruning do real work on these small tables.
    saved = solve._PRUNE_AGAINST
    solve._PRUNE_AGAINST = against
    try:
        _check(case, deadline)
    finally:
        solve._PRUNE_AGAINST = saved


def _check(case: tuple[Any, ...], deadline: float | None) -> None:
    cat, p, egress, pools, cached = case
    # With pools, plan as a user would (every catalog cloud enabled, pools and `local` candidates).
    policy = Policy(all_clouds=not pools, deadline_h=deadline, pools=pools, cached=cached)
    try:
        expected = _brute_force(p, cat, egress, policy)
    except PlanningError:
        with pytest.raises(PlanningError):
            plan_pipeline(p, cat, egress, policy, baseline=False)
        return
    if expected is None:
        with pytest.raises(PlanningError, match="no plan meets the constraints"):
            plan_pipeline(p, cat, egress, policy, baseline=False)
        return
    plan = plan_pipeline(p, cat, egress, policy, baseline=False)
    assert plan.total_usd == pytest.approx(expected, abs=1e-6)
    if deadline is not None:
        assert plan.total_hours <= deadline + 1e-6


def _brute_force_fastest(p: Any, cat: Any, egress: Any, policy: Policy) -> tuple[float, float] | None:
    """(hours, USD) of the fastest plan within the budget, the cheapest among the fastest."""
    problem, _ = _problem(p, cat, egress, policy)
    results = [evaluate(problem, list(choice))
               for choice in itertools.product(*[range(len(o)) for o in problem.options])]
    assert policy.max_cost_usd is not None
    within = [r for r in results if r.total_usd <= policy.max_cost_usd + 1e-9]
    if not within:
        return None
    fastest = min(r.hours for r in within)
    return fastest, min(r.total_usd for r in within if r.hours <= fastest + 1e-6 * max(1.0, fastest))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([0.5, 1.0, 1.3, 2.0]))
def test_a_budget_gives_the_fastest_plan_within_it(case: tuple[Any, ...], budget_factor: float) -> None:
    cat, p, egress, pools, cached = case
    cheapest_policy = Policy(all_clouds=not pools, pools=pools, cached=cached)
    try:
        cheapest = plan_pipeline(p, cat, egress, cheapest_policy, baseline=False).total_usd
    except PlanningError:
        return  # no candidate at all: covered above
    policy = Policy(all_clouds=not pools, pools=pools, cached=cached, max_cost_usd=cheapest * budget_factor)
    expected = _brute_force_fastest(p, cat, egress, policy)
    if expected is None:
        with pytest.raises(PlanningError, match="no plan meets the constraints: no plan costs at most the budget"):
            plan_pipeline(p, cat, egress, policy, baseline=False)
        return
    plan = plan_pipeline(p, cat, egress, policy, baseline=False)
    assert plan.objective == "time"
    assert plan.total_hours == pytest.approx(expected[0], abs=1e-5)
    assert plan.total_usd == pytest.approx(expected[1], abs=1e-5)
