"""The integer program's per-cloud egress rows and its starting plans, against brute force.

General DAGs (artifacts with several consumers, undirected cycles) with egress rates that depend
only on the clouds of the two ends: the case the program linearizes per source cloud.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import catalog, infras, offer, pipeline, position, rules

from skyflow.errors import PlanningError
from skyflow.planner import CachedCopy, Policy
from skyflow.planner.budget import Budget
from skyflow.planner.core import _problem
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import LocalSearch, good_start
from skyflow.planner.solve import cheapest_per_location, solve_milp, solve_milp_bounded

LOCATIONS = ["aws/a", "aws/b", "gcp/a", "gcp/b", "azure/a", "lambda/a"]
RATES = [0.0, 0.01, 0.05, 0.12]


@st.composite
def cloud_level_cases(draw: Any) -> Problem:
    offers = [offer(loc, f"cpu-{loc}", draw(st.integers(1, 40)) / 4) for loc in LOCATIONS if draw(st.booleans())]
    if not offers:
        offers = [offer("aws/a", "cpu-aws/a", 1.0)]
    n = draw(st.integers(3, 5))
    stages: dict[str, Any] = {}
    for i in range(n):
        parents = [f"s{j}" for j in range(i) if draw(st.integers(0, 1))]
        stages[f"s{i}"] = {"outputs": {"o": draw(st.sampled_from([0, 10, 40, 200]))},
                           "inputs": {f"i{j}": f"{p}.o" for j, p in enumerate(parents)},
                           "estimate": draw(st.integers(1, 4))}
    stages["s0"]["inputs"] = {"raw": "raw"}
    inputs = {"raw": {"uri": "s3://b/raw", "infra": draw(st.sampled_from(LOCATIONS)), "size_gb": 50}}
    pairs = [("aws", "aws"), ("gcp", "gcp"), ("aws", "*"), ("gcp", "*"), ("azure", "*"), ("lambda", "*"),
             ("*", "*")]
    egress = rules(*[(a, b, draw(st.sampled_from(RATES))) for a, b in pairs])
    # Some stages' outputs already exist somewhere: a zero-hour, zero-compute option there.
    cached: dict[str, tuple[CachedCopy, ...]] = {name: (CachedCopy(draw(st.sampled_from(LOCATIONS))),)
                                                for name in stages if draw(st.integers(0, 3)) == 0}
    problem, _ = _problem(pipeline(stages, inputs), catalog(*offers), egress, Policy(all_clouds=True, cached=cached))
    return problem


def _brute_force(problem: Problem, deadline_h: float | None, max_cost_usd: float | None) -> float | None:
    best = None
    for choice in itertools.product(*[range(len(o)) for o in problem.options]):
        result = evaluate(problem, list(choice))
        if deadline_h is not None and result.hours > deadline_h + 1e-9:
            continue
        if max_cost_usd is not None and result.total_usd > max_cost_usd + 1e-9:
            continue
        if best is None or result.total_usd < best:
            best = result.total_usd
    return best


def _starts(problem: Problem, keep: list[np.ndarray]) -> dict[str, list[int] | None]:
    dearest = [int(k[np.argmax(problem.opt_compute[s][k])]) for s, k in enumerate(keep)]
    return {"none": None, "search": good_start(problem, keep), "dearest": dearest}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases(), st.sampled_from([None, None, 3.0, 6.0, 12.0]), st.sampled_from([None, None, 0.5, 1.0]))
def test_per_cloud_program_matches_brute_force(problem: Problem, deadline: float | None,
                                               budget_factor: float | None) -> None:
    keep = cheapest_per_location(problem)
    # The per-cloud rows are what is under test: every transfer with a producer takes that branch.
    model = MilpModel(problem, keep, with_time=False)
    assert set(model.shares) == {t.producer for t in problem.transfers if t.producer is not None and t.size_gb > 0}
    unconstrained = _brute_force(problem, None, None)
    assert unconstrained is not None
    max_cost = None if budget_factor is None else unconstrained * (1 + budget_factor)
    expected = _brute_force(problem, deadline, max_cost)
    with_time = deadline is not None or max_cost is not None
    for name, start in _starts(problem, keep).items():
        if expected is None:
            with pytest.raises(PlanningError, match="no plan meets the constraints"):
                solve_milp(problem, keep, with_time=with_time, deadline_h=deadline, max_cost_usd=max_cost,
                           start=start)
            continue
        choice = solve_milp(problem, keep, with_time=with_time, deadline_h=deadline, max_cost_usd=max_cost,
                            start=start)
        result = evaluate(problem, choice)
        assert result.total_usd == pytest.approx(expected, abs=1e-6), name
        if deadline is not None:
            assert result.hours <= deadline + 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases(), st.sampled_from([0.0, 1e-4]))
def test_a_search_stopped_early_brackets_the_optimum(problem: Problem, time_limit_s: float) -> None:
    """Out of time at once, the plan is the best found (at worst the start) and its bound is proven."""
    keep = cheapest_per_location(problem)
    start = good_start(problem, keep)
    expected = _brute_force(problem, None, None)
    assert expected is not None
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(time_limit_s))
    cost = evaluate(problem, found.choice).total_usd
    assert all(found.choice[s] in set(opts.tolist()) for s, opts in enumerate(keep))
    assert expected - 1e-6 <= cost <= evaluate(problem, start).total_usd + 1e-6
    if found.cost_bound is None:  # proven optimal
        assert cost == pytest.approx(expected, abs=1e-6)
    else:
        assert 0 <= found.cost_bound <= expected + 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases(), st.randoms(use_true_random=False))
def test_local_search_deltas_are_exact(problem: Problem, rng: Any) -> None:
    keep = cheapest_per_location(problem)
    search = LocalSearch(problem, keep)
    for _ in range(6):  # random walk: every move's predicted change equals the evaluated one
        s = rng.randrange(len(keep))
        before = evaluate(problem, search.choice(keep)).total_usd
        delta = search.delta(s)
        k = rng.randrange(len(keep[s]))
        search.move(s, k)
        after = evaluate(problem, search.choice(keep)).total_usd
        assert after - before == pytest.approx(delta[k], abs=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases())
def test_good_start_is_a_local_optimum(problem: Problem) -> None:
    keep = cheapest_per_location(problem)
    choice = good_start(problem, keep)
    cost = evaluate(problem, choice).total_usd
    for s, opts in enumerate(keep):
        assert choice[s] in set(opts.tolist())
        for k in opts:
            trial = list(choice)
            trial[s] = int(k)
            assert evaluate(problem, trial).total_usd >= cost - 1e-6


def test_a_start_that_presolve_makes_moot_still_gives_the_optimum() -> None:
    # HiGHS 1.16 solved this at presolve and handed back the start ($1.50) while reporting $1.25.
    offers = [offer("gcp/a", "cpu-gcp/a", 0.25), offer("lambda/a", "cpu-lambda/a", 0.25),
              offer("aws/b", "cpu-aws/b", 0.5)]
    stages = {"s0": {"inputs": {"raw": "raw"}, "outputs": {"o": 10}, "estimate": 1},
              "s1": {"outputs": {"o": 0}, "estimate": 1},
              "s2": {"inputs": {"i0": "s0.o"}, "outputs": {"o": 0}, "estimate": 1}}
    inputs = {"raw": {"uri": "s3://b/raw", "infra": "aws/a", "size_gb": 50}}
    egress = rules(("aws", "aws", 0.0), ("gcp", "gcp", 0.0), ("aws", "*", 0.05), ("*", "*", 0.0))
    problem, _ = _problem(pipeline(stages, inputs), catalog(*offers), egress, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    assert _brute_force(problem, None, None) == pytest.approx(1.25)
    for name, start in _starts(problem, keep).items():
        assert evaluate(problem, solve_milp(problem, keep, start=start)).total_usd == pytest.approx(1.25), name
        # and under a time limit, the second search gets what is left of it
        found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0))
        assert evaluate(problem, found.choice).total_usd == pytest.approx(1.25), name
        assert found.cost_bound is None, name


def test_egress_priced_per_pair_of_regions_counts_cents() -> None:
    # aws/a -> gcp/a costs $0.02/GB but aws/b -> gcp/a $0.05/GB: the rate depends on the region, so the
    # program prices each pair of locations. 10 GB from aws/a costs $0.20, more than the $0.05 the
    # producer saves there, so it runs next to its consumer, which only gcp/a can hold.
    offers = [offer("aws/a", "cpu-a", 1.00), offer("aws/b", "cpu-b", 1.10), offer("gcp/a", "cpu-g", 1.05),
              offer("gcp/a", "l4-g", 2.0, acc="L4", count=1)]
    stages = {"s0": {"outputs": {"o": 10}, "estimate": 1},
              "s1": {"inputs": {"i": "s0.o"}, "outputs": {"o": 0}, "estimate": 1,
                     "resources": {"accelerators": "L4:1"}}}
    egress = rules(("aws/a", "gcp/a", 0.02), ("*", "*", 0.05))
    problem, _ = _problem(pipeline(stages), catalog(*offers), egress, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    assert MilpModel(problem, keep, with_time=False).shares == {}  # no per-cloud rows: the pairwise ones
    choice = solve_milp(problem, keep)
    assert infras(problem, choice) == ["gcp/a", "gcp/a"]
    assert evaluate(problem, choice).total_usd == pytest.approx(3.05)
    moved = list(choice)
    moved[0] = position(problem, 0, "aws/a")
    assert evaluate(problem, moved).total_usd == pytest.approx(3.20)


def test_every_reader_of_an_input_waits_for_its_copy() -> None:
    # Both stages read the 400 GB corpus in aws/a. Copying it elsewhere takes hours, so the fastest plan
    # keeps the second reader there too, although gcp/a is cheaper for it at the same run time.
    offers = [offer("aws/a", "cpu-a", 2.0), offer("gcp/a", "cpu-g", 1.0)]
    stages = {"s0": {"inputs": {"raw": "raw"}, "outputs": {"o": 0}, "estimate": 1},
              "s1": {"inputs": {"raw": "raw"}, "outputs": {"o": 0}, "estimate": 1}}
    inputs = {"raw": {"uri": "s3://b/raw", "infra": "aws/a", "size_gb": 400}}
    problem, _ = _problem(pipeline(stages, inputs), catalog(*offers), rules(("*", "*", 0.0)),
                          Policy(all_clouds=True))
    assert [t.consumers for t in problem.transfers] == [(0, 1)]
    keep = cheapest_per_location(problem)
    found = solve_milp_bounded(problem, keep, with_time=True, minimize="time")
    assert infras(problem, found.choice) == ["aws/a", "aws/a"]
    assert evaluate(problem, found.choice).hours == pytest.approx(1.0)


def test_moving_an_output_takes_its_whole_transfer_time() -> None:
    # s0 fits only aws/a's 16 vCPUs. s1 runs 3 h on the L4 next to its input, or 1 h on the A100 in gcp/a
    # after copying 1,080 GB there (3 h at 360 GB/h): staying is the faster plan by an hour.
    offers = [offer("aws/a", "cpu-a", 1.0, cpus=16), offer("aws/a", "l4-a", 1.0, acc="L4", count=1),
              offer("gcp/a", "a100-g", 1.0, acc="A100", count=1)]
    stages = {"s0": {"outputs": {"o": 1080}, "estimate": 1, "resources": {"cpus": 16}},
              "s1": {"inputs": {"i": "s0.o"}, "outputs": {"o": 0}, "estimate": {"hours": {"L4": 3, "A100": 1}},
                     "resources": {"accelerators": {"L4": 1, "A100": 1}}}}
    problem, _ = _problem(pipeline(stages), catalog(*offers), rules(("*", "*", 0.0)), Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    found = solve_milp_bounded(problem, keep, with_time=True, minimize="time")
    assert infras(problem, found.choice) == ["aws/a", "aws/a"]
    assert evaluate(problem, found.choice).hours == pytest.approx(4.0)
    moved = [found.choice[0], position(problem, 1, "gcp/a")]
    assert evaluate(problem, moved).hours == pytest.approx(5.0)


def test_a_stage_ordered_after_another_starts_when_it_ends() -> None:
    # s1 moves no data from s0 but is ordered after it (`depends_on`): the fastest plan runs it on the A100
    # (3 h + 1 h), not on the cheaper L4, which would end the pipeline an hour later.
    offers = [offer("aws/a", "cpu-a", 1.0, cpus=16), offer("aws/a", "l4-a", 0.5, acc="L4", count=1),
              offer("aws/a", "a100-a", 2.0, acc="A100", count=1)]
    stages = {"s0": {"outputs": {"o": 0}, "estimate": 3, "resources": {"cpus": 16}},
              "s1": {"depends_on": ["s0"], "outputs": {"o": 0}, "estimate": {"hours": {"L4": 2, "A100": 1}},
                     "resources": {"accelerators": {"L4": 1, "A100": 1}}}}
    problem, _ = _problem(pipeline(stages), catalog(*offers), rules(), Policy(all_clouds=True))
    assert problem.ordering == [(0, 1)] and not problem.transfers
    keep = [np.arange(len(options)) for options in problem.options]
    found = solve_milp_bounded(problem, keep, with_time=True, minimize="time")
    assert [problem.options[s][k].accelerators for s, k in enumerate(found.choice)] == [{}, {"A100": 1}]
    assert evaluate(problem, found.choice).hours == pytest.approx(4.0)

