"""Reduced-cost fixing: the LP relaxation's duals drop the options no plan cheaper than the incumbent can
use. Checked against every plan of small random problems, and through the search that uses it."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tables import catalog, offer, pipeline, rules
from test_brute_force import cases
from test_solver_stops import LeapingClock

from skyflow.errors import PlanningError
from skyflow.planner import Policy
from skyflow.planner import solve as solve_module
from skyflow.planner.budget import Budget
from skyflow.planner.core import _problem
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.solve import cheapest_per_location, solve_milp_bounded


def _every_plan(problem: Problem, keep: list[np.ndarray]) -> list[tuple[list[int], float]]:
    return [(list(c), evaluate(problem, list(c)).total_usd) for c in itertools.product(*[k.tolist() for k in keep])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(0, 10_000))
def test_no_plan_as_cheap_as_the_incumbent_loses_an_option(case: tuple[Any, ...], pick: int) -> None:
    cat, p, egress, pools, cached = case
    try:
        problem, _ = _problem(p, cat, egress, Policy(all_clouds=not pools, pools=pools, cached=cached))
    except PlanningError:  # some stage has no place to run: nothing to fix
        assume(False)
    keep = cheapest_per_location(problem)
    model = MilpModel(problem, keep, with_time=False)
    relaxed = model.relaxation(model.cost_objective(), None)
    assert relaxed is not None
    plans = sorted(_every_plan(problem, keep), key=lambda plan: plan[1])
    incumbent = plans[pick % len(plans)][1]  # any plan's cost: the optimum's, or a worse start's
    surviving = model.surviving(relaxed, incumbent)
    assert all(len(opts) >= 1 and set(opts.tolist()) <= set(k.tolist())
               for opts, k in zip(surviving, keep, strict=True))
    for choice, usd in plans:
        if usd <= incumbent + 1e-9:
            assert all(c in opts for c, opts in zip(choice, surviving, strict=True)), (choice, usd, incumbent)


def _two_regions() -> tuple[Problem, list[np.ndarray]]:
    """Three stages in a chain, each $1/h in aws/near and $1.5/h in aws/far, moving 100 GB at $0.02/GB: all
    in aws/near ($2 + $1 + $3) is the optimum, and each stage's other region is dearer by more than any gap
    a start in aws/near leaves."""
    cat = catalog(offer("aws/near", "m", 1.0), offer("aws/far", "m2", 1.5))
    p = pipeline({"a": {"estimate": 2, "outputs": {"o": 100}},
                  "b": {"estimate": 1, "inputs": {"x": "a.o"}, "outputs": {"o": 100}},
                  "c": {"estimate": 3, "inputs": {"x": "b.o"}}})
    problem, _ = _problem(p, cat, rules(("aws", "aws", 0.02)), Policy(all_clouds=True))
    return problem, cheapest_per_location(problem)


def test_an_optimal_start_keeps_only_its_own_options() -> None:
    problem, keep = _two_regions()
    model = MilpModel(problem, keep, with_time=False)
    relaxed = model.relaxation(model.cost_objective(), None)
    assert relaxed is not None
    best = min(_every_plan(problem, keep), key=lambda plan: plan[1])
    assert best[1] == pytest.approx(6.0)
    assert [opts.tolist() for opts in model.surviving(relaxed, best[1])] == [[c] for c in best[0]]
    # A start $5 dearer than the optimum leaves room for every option (each costs at most $3 more here).
    assert [len(opts) for opts in model.surviving(relaxed, best[1] + 5.0)] == [2, 2, 2]


def _searched(monkeypatch: pytest.MonkeyPatch, problem: Problem, keep: list[np.ndarray],
              start: list[int]) -> tuple[Any, list[str]]:
    monkeypatch.setattr(solve_module, "_GUIDED_FROM_STAGES", 1)  # the LP path, on a small program
    heard: list[str] = []
    clock = LeapingClock(1e-3)
    clock.now = 1e6
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0, clock=clock, progress=heard.append))
    return found, heard


def test_a_start_the_reduced_costs_prove_optimal_is_returned_without_the_integer_program(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep = _two_regions()
    best = min(_every_plan(problem, keep), key=lambda plan: plan[1])[0]

    def no_search(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the integer program was searched")

    monkeypatch.setattr(MilpModel, "solve", no_search)
    # The compute floor and the chain's DP bound would prove it before the program is built: not here.
    monkeypatch.setattr(solve_module, "forest_marginals",
                        lambda problem, keep: (0.0, [np.full(len(k), -np.inf) for k in keep]))
    monkeypatch.setattr(solve_module, "_compute_floor", lambda problem, keep: 0.0)
    found, heard = _searched(monkeypatch, problem, keep, best)
    assert found.choice == best and found.cost_bound is None
    assert any(h.endswith("the LP's reduced costs leave 3 of 6 placements") for h in heard)
    assert any(h.endswith("no other placement can do better: the start is proven optimal") for h in heard)


def test_the_narrowed_program_is_built_searched_and_proves_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A diamond, every stage cheapest at $0.5/h in aws/r2 and in gcp/r2 alike (then $1, $1.5): the reduced
    costs drop the dearer regions and keep both cheapest ones, which only the program can choose between."""
    cat = catalog(offer("aws/r1", "m1", 1.0), offer("aws/r2", "m2", 0.5), offer("gcp/r1", "n1", 1.5),
                  offer("gcp/r2", "n2", 0.5))
    p = pipeline({"a": {"estimate": 2, "outputs": {"o": 40}},
                  "b": {"estimate": 2, "inputs": {"x": "a.o"}, "outputs": {"o": 40}},
                  "c": {"estimate": 1, "inputs": {"x": "a.o"}, "outputs": {"o": 20}},
                  "d": {"estimate": 2, "inputs": {"x": "b.o", "y": "c.o"}}})
    problem, _ = _problem(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    plans = _every_plan(problem, keep)
    dearest = max(plans, key=lambda plan: plan[1])[0]
    built: list[int] = []  # the placements of each program built
    searched: list[int] = []  # and of each program searched
    build, search = MilpModel.__init__, MilpModel.solve

    def recording_build(self: MilpModel, problem: Problem, keep: list[np.ndarray], **kwargs: Any) -> None:
        built.append(sum(len(k) for k in keep))
        build(self, problem, keep, **kwargs)

    def recording_search(self: MilpModel, *args: Any, **kwargs: Any) -> np.ndarray:
        searched.append(sum(len(k) for k in self.keep))
        return search(self, *args, **kwargs)

    monkeypatch.setattr(MilpModel, "__init__", recording_build)
    monkeypatch.setattr(MilpModel, "solve", recording_search)
    found, heard = _searched(monkeypatch, problem, keep, dearest)
    assert evaluate(problem, found.choice).total_usd == pytest.approx(min(usd for _, usd in plans)) == 3.5
    assert found.cost_bound is None
    assert built == [16, 8] and searched == [8]
    assert any(h.endswith("the LP's reduced costs leave 8 of 16 placements") for h in heard)
    assert not any("proven optimal" in h for h in heard)  # the program proved it, not the reduced costs
