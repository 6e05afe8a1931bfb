"""The forest relaxation's bound: never above the optimum, exact on forests, and what ends a search early."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import catalog, offer, pipeline, rules
from test_milp import _brute_force, cloud_level_cases
from test_time_limit import EGRESS, _large_case

from skyflow.planner import Policy, plan_pipeline
from skyflow.planner import milp as milp_module
from skyflow.planner import solve as solve_module
from skyflow.planner.budget import Budget
from skyflow.planner.components import DisjointSets
from skyflow.planner.core import _problem
from skyflow.planner.forest import (
    _min_marginals,
    _relaxed_optimum,
    forest_bound,
    forest_marginals,
    is_forest,
    relaxed_charges,
)
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import good_start
from skyflow.planner.solve import _compute_floor, cheapest_per_location, solve_milp_bounded


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases())
def test_the_bound_is_never_above_the_optimum_and_is_the_optimum_on_a_forest(problem: Problem) -> None:
    keep = cheapest_per_location(problem)
    optimum = _brute_force(problem, None, None)
    assert optimum is not None
    bound = forest_bound(problem, keep)
    assert _compute_floor(problem, keep) - 1e-9 <= bound <= optimum + 1e-6
    for split in (False, True):  # each relaxation is a bound of its own: the larger is kept
        assert _relaxed_optimum(problem, keep, relaxed_charges(problem, split=split)) <= bound + 1e-9
    if is_forest(problem):
        assert bound == pytest.approx(optimum, abs=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases(), st.booleans())
def test_the_relaxation_charges_at_most_each_whole_transfer_along_a_forest(problem: Problem, split: bool) -> None:
    charges = relaxed_charges(problem, split=split)
    by_artifact = {t.artifact: t for t in problem.transfers}
    shares: dict[str, float] = {}
    forest = DisjointSets(len(problem.names))
    linked: set[tuple[int, int]] = set()
    for charge in charges:
        t, whole = charge.transfer, by_artifact[charge.transfer.artifact]
        assert len(t.consumers) == 1 and t.consumers[0] in whole.consumers and charge.share > 0
        assert (t.producer, t.source, t.size_gb) == (whole.producer, whole.source, whole.size_gb)
        shares[t.artifact] = shares.get(t.artifact, 0.0) + charge.share
        if t.producer is not None and (t.producer, t.consumers[0]) not in linked:
            linked.add((t.producer, t.consumers[0]))
            assert forest.union(t.producer, t.consumers[0])  # no undirected cycle
    assert all(total <= 1 + 1e-12 for total in shares.values())  # never more than the transfer pays
    inputs = {t.artifact for t in problem.transfers if t.producer is None}
    assert inputs <= set(shares)  # an input is no edge: it is always charged
    if split:
        assert all(shares[a] == pytest.approx(1.0) for a in inputs)


def test_a_stage_with_two_outputs_does_not_close_a_cycle() -> None:
    # a sends o1 to b and o2 to c, and b and c both feed d: four pairs on one undirected cycle; the
    # lightest (c's 1 GB to d) is dropped.
    cat = catalog(offer("aws/r1", "m", 1.0), offer("gcp/r1", "n", 0.6))
    p = pipeline({"a": {"outputs": {"o1": 30, "o2": 20}, "estimate": 1},
                  "b": {"inputs": {"x": "a.o1"}, "outputs": {"o": 40}},
                  "c": {"inputs": {"x": "a.o2"}, "outputs": {"o": 1}},
                  "d": {"inputs": {"x": "b.o", "y": "c.o"}}})
    problem, _ = _problem(p, cat, rules(("*", "*", 0.1)), Policy(all_clouds=True))
    for split in (False, True):
        kept = {(problem.names[c.transfer.producer], problem.names[c.transfer.consumers[0]])  # type: ignore[index]
                for c in relaxed_charges(problem, split=split)}
        assert kept == {("a", "b"), ("a", "c"), ("b", "d")}


def _diamond() -> Problem:
    """a feeds b and c, which both feed d: one undirected cycle. The input sits in aws; gcp is cheaper."""
    cat = catalog(offer("aws/r1", "m", 1.0), offer("gcp/r1", "n", 0.6), offer("gcp/r2", "n", 0.7))
    p = pipeline({"a": {"outputs": {"o": 10}, "inputs": {"raw": "raw"}, "estimate": 2},
                  "b": {"inputs": {"x": "a.o"}, "outputs": {"o": 10}, "estimate": 2},
                  "c": {"inputs": {"x": "a.o"}, "outputs": {"o": 10}, "estimate": 2},
                  "d": {"inputs": {"x": "b.o", "y": "c.o"}, "estimate": 2}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r1", "size_gb": 100}})
    problem, _ = _problem(p, cat, rules(("aws", "*", 0.09), ("gcp", "gcp", 0.01), ("gcp", "*", 0.12)),
                          Policy(all_clouds=True))
    return problem


def test_the_bound_counts_the_egress_no_plan_avoids() -> None:
    # Reading the 100 GB input off aws costs $9, so a stays on aws at $0.80 more than on gcp, and its
    # output moves to gcp once ($0.90) for b, c and d: the compute floor misses both, the forest
    # relaxation (a.o charged once, to b; b.o and c.o to d) misses neither.
    problem = _diamond()
    keep = cheapest_per_location(problem)
    floor, bound = _compute_floor(problem, keep), forest_bound(problem, keep)
    assert floor == pytest.approx(4 * 2 * 0.6)
    assert bound == pytest.approx(floor + 0.8 + 0.9) == _brute_force(problem, None, None)


def test_a_fan_out_is_bounded_by_splitting_its_rate_among_the_readers() -> None:
    # a's 10 GB output goes to b (both need an A100, only aws has one) and to c (a CPU stage, $0.40 an
    # hour cheaper on gcp, $0.90 of egress away). Charged whole to b, the copy costs nothing and c looks
    # free to move: $6.60. Split, c carries half the copy ($0.45) and stays on aws: $7, the optimum.
    cat = catalog(offer("aws/r1", "p", 3.0, acc="A100", count=1), offer("aws/r1", "m", 1.0),
                  offer("gcp/r1", "n", 0.6))
    gpu = {"accelerators": "A100:1"}
    p = pipeline({"a": {"outputs": {"o": 10}, "estimate": 1, "resources": gpu},
                  "b": {"inputs": {"x": "a.o"}, "estimate": 1, "resources": gpu},
                  "c": {"inputs": {"x": "a.o"}, "estimate": 1}})
    problem, _ = _problem(p, cat, rules(("aws", "*", 0.09)), Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    whole, split = (_relaxed_optimum(problem, keep, relaxed_charges(problem, split=split)) for split in (False, True))
    assert (whole, split) == (pytest.approx(6.6), pytest.approx(7.0))  # type: ignore[comparison-overlap]  # pytest.approx equals a float
    assert forest_bound(problem, keep) == pytest.approx(7.0) == _brute_force(problem, None, None)


class _NoProgram(MilpModel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no integer program should be built")


def test_a_start_the_bound_proves_optimal_is_returned_without_a_program(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _diamond()
    keep = cheapest_per_location(problem)
    start = good_start(problem, keep)
    optimum = _brute_force(problem, None, None)
    assert evaluate(problem, start).total_usd == pytest.approx(optimum)
    heard: list[str] = []
    monkeypatch.setattr(milp_module, "MilpModel", _NoProgram)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(None, progress=heard.append))
    assert (found.choice, found.cost_bound) == (start, None)
    assert heard[-1].endswith("the start costs no more than the forest relaxation's bound: proven optimal")


def _unproven(seed: int = 3) -> tuple[Problem, list[np.ndarray], list[int], float]:
    """A general DAG whose local-search start the forest bound cannot prove: (problem, keep, start, bound)."""
    p, cat = _large_case(40, seed=seed)
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    start = good_start(problem, keep)
    bound = forest_bound(problem, keep)
    assert bound < evaluate(problem, start).total_usd - 1e-6
    return problem, keep, start, bound


def test_with_only_the_reserve_left_the_start_comes_back_with_the_forest_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, start, bound = _unproven()
    monkeypatch.setattr(milp_module, "MilpModel", _NoProgram)
    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0], started=90.4)  # 0.4 s left: under the 5 % reserve
    assert budget.spent()
    found = solve_milp_bounded(problem, keep, start=start, budget=budget)
    assert found.choice == start and found.cost_bound == pytest.approx(bound)


def test_with_less_time_left_than_building_the_program_takes_none_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, start, bound = _unproven()
    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0], started=94.0)  # 4 s left, 3.5 s before the reserve
    built: list[int] = []

    class Counting(MilpModel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(milp_module, "MilpModel", Counting)
    needs = solve_module._BUILD_OVER_SEARCH  # times the search's time, to build the program
    found = solve_milp_bounded(problem, keep, start=start, budget=budget, search_s=3.6 / needs)
    assert found.choice == start and found.cost_bound == pytest.approx(bound) and not built
    solve_milp_bounded(problem, keep, start=start, budget=budget, search_s=3.4 / needs)
    assert built == [1]


def test_a_program_whose_build_runs_out_of_time_gives_the_start_and_the_forest_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, start, bound = _unproven()
    asked: list[bool] = []

    class OutOfTimeWhileBuilding(MilpModel):
        def __init__(self, *args: Any, stop: Any = None, **kwargs: Any) -> None:
            asked.append(stop is not None)  # the search hands the budget's check to the build
            super().__init__(*args, stop=lambda: True, **kwargs)

    monkeypatch.setattr(milp_module, "MilpModel", OutOfTimeWhileBuilding)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0))
    assert asked == [True]
    assert found.choice == start and found.cost_bound == pytest.approx(bound)


def test_a_build_ends_where_its_stop_says_and_is_complete_only_when_it_never_did() -> None:
    problem, keep, _, _ = _unproven()
    whole = MilpModel(problem, keep, with_time=False)
    calls: list[int] = []

    def stop_at_third() -> bool:
        calls.append(1)
        return len(calls) >= 3

    part = MilpModel(problem, keep, with_time=False, stop=stop_at_third)
    assert whole.complete and not part.complete and len(calls) == 3
    assert len(part.rows) < len(whole.rows)
    assert MilpModel(problem, keep, with_time=False, stop=lambda: False).complete


def test_a_build_ends_once_its_nonzeros_outgrow_what_fits() -> None:
    """``fits`` is asked between transfers with the nonzeros built so far: exact counts, growing; the build
    ends at the first it refuses, and a build it never refuses is the whole program."""
    problem, keep, _, _ = _unproven()
    whole = MilpModel(problem, keep, with_time=False)
    asked: list[int] = []

    def half(nonzeros: int) -> bool:
        asked.append(nonzeros)
        return nonzeros <= whole.nonzeros() // 2

    part = MilpModel(problem, keep, with_time=False, fits=half)
    assert not part.complete and part.outgrown == asked[-1] == part.nonzeros()
    assert asked == sorted(asked) and asked[-2] <= whole.nonzeros() // 2 < asked[-1]
    agreed = MilpModel(problem, keep, with_time=False, fits=lambda nonzeros: True)
    assert agreed.complete and agreed.outgrown is None and agreed.rows == whole.rows


def test_no_stop_is_asked_for_a_search_with_rows_or_without_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, start, _ = _unproven()
    stops: list[bool] = []

    class Recording(MilpModel):
        def __init__(self, *args: Any, stop: Any = None, **kwargs: Any) -> None:
            stops.append(stop is not None)
            super().__init__(*args, stop=stop, **kwargs)

    monkeypatch.setattr(milp_module, "MilpModel", Recording)
    solve_milp_bounded(problem, keep, budget=Budget(60.0))
    cost = evaluate(problem, start).total_usd
    solve_milp_bounded(problem, keep, start=start, max_cost_usd=cost * 2, budget=Budget(60.0))
    solve_milp_bounded(problem, keep, start=start, budget=Budget(None))
    assert stops == [False, False, False]


def test_a_plan_out_of_time_prints_the_forest_bounds_gap() -> None:
    """End to end: a one-second limit already spent when planning begins still gives a plan, its bound
    the forest relaxation's (above every stage's cheapest compute), and a gap."""
    p, cat = _large_case(40, seed=3)
    now = [1000.0]
    late = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=1.0), baseline=False,
                         started=999.0, clock=lambda: now[0])
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    exact = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=0), baseline=False)
    assert late.lower_bound_usd is not None and late.gap is not None and late.gap > 0
    assert _compute_floor(problem, keep) < late.lower_bound_usd <= exact.total_usd + 1e-6 <= late.total_usd + 2e-6


def _relaxed_cost(problem: Problem, keep: list[np.ndarray], charges: list[Any], position: tuple[int, ...]) -> float:
    """What the relaxation charges one plan (a position in ``keep`` per stage): compute, and each charge's
    share of moving its artifact to its one consumer, summed here from the transfer prices."""
    chosen = [int(keep[s][k]) for s, k in enumerate(position)]
    total = sum(float(problem.opt_compute[s][o]) for s, o in enumerate(chosen))
    for charge in charges:
        t = charge.transfer
        dst = int(problem.opt_loc[t.consumers[0]][chosen[t.consumers[0]]])
        p = t.producer
        src = problem.loc_index[t.source] if p is None else int(problem.opt_loc[p][chosen[p]])
        total += charge.share * float(problem.cost_matrix(t.size_gb)[src, dst])
    return total


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases(), st.booleans())
def test_each_placements_min_marginal_is_the_relaxed_optimum_with_the_stage_held_there(problem: Problem,
                                                                                       split: bool) -> None:
    keep = cheapest_per_location(problem)
    charges = relaxed_charges(problem, split=split)
    value, marginals = _min_marginals(problem, keep, charges)
    every = {position: _relaxed_cost(problem, keep, charges, position)
             for position in itertools.product(*[range(len(k)) for k in keep])}
    assert value == pytest.approx(min(every.values()), abs=1e-9)
    for s, held in enumerate(marginals):
        assert len(held) == len(keep[s])
        for k in range(len(keep[s])):
            assert held[k] == pytest.approx(min(v for p, v in every.items() if p[s] == k), abs=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud_level_cases())
def test_no_plan_costs_less_than_the_bound_of_any_placement_it_uses(problem: Problem) -> None:
    keep = cheapest_per_location(problem)
    bound, marginals = forest_marginals(problem, keep)
    assert bound == pytest.approx(forest_bound(problem, keep), abs=1e-12)
    for position in itertools.product(*[range(len(k)) for k in keep]):
        usd = evaluate(problem, [int(keep[s][k]) for s, k in enumerate(position)]).total_usd
        assert all(marginals[s][k] <= usd + 1e-9 for s, k in enumerate(position))


def test_a_start_whose_placements_alone_survive_the_forest_bounds_is_proven_without_a_program(
        monkeypatch: pytest.MonkeyPatch) -> None:
    p, cat = _large_case(40, seed=11)  # the forest's bound alone is below its optimum; per placement it is not
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    start = good_start(problem, keep)
    assert forest_bound(problem, keep) < evaluate(problem, start).total_usd - 1e-6

    def no_program(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an integer program was built")

    monkeypatch.setattr(MilpModel, "__init__", no_program)
    heard: list[str] = []
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0, progress=heard.append))
    assert found.choice == start and found.cost_bound is None
    assert any(f"the forest relaxation's bounds per placement leave {len(keep)} of {sum(len(k) for k in keep)} "
               "placements" in h for h in heard)
    assert heard[-1].endswith("no other placement can do better: the start is proven optimal")
    optimum = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=0), baseline=False).total_usd
    assert evaluate(problem, start).total_usd == pytest.approx(optimum)
