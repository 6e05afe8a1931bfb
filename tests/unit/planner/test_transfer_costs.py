"""Transfer costs read through the schedule ids or from a dense array give the same prices; a problem holds
dense arrays only up to its allowance, first come first served."""

from __future__ import annotations

import numpy as np
import pytest
from tables import catalog, offer, pipeline, problem_with_every_option, rules

from skyflow.planner import Policy
from skyflow.planner import problem as problem_module
from skyflow.planner.problem import Problem, TransferCosts

EGRESS = rules(("aws", "aws", 0.02), ("aws", "gcp", 0.09), ("gcp", "aws", 0.12), ("gcp", "gcp", 0.01))


def _problem() -> Problem:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.5), offer("gcp/c", "n", 1.2),
                  offer("gcp/d", "n", 0.9))
    p = pipeline({"prep": {"estimate": 1, "outputs": {"o": 10, "p": 20, "q": 30}},
                  "a": {"estimate": 1, "inputs": {"x": "prep.o"}},
                  "b": {"estimate": 1, "inputs": {"x": "prep.p"}},
                  "c": {"estimate": 1, "inputs": {"x": "prep.q"}}})
    problem, _ = problem_with_every_option(p, cat, EGRESS, Policy(all_clouds=True))
    return problem


def test_a_dense_array_and_the_schedule_ids_read_the_same_prices() -> None:
    problem = _problem()
    ids = problem.tier_ids()
    prices = problem.cost_matrix(10.0).per_tier
    dense, through_ids = TransferCosts(prices, ids, dense=True), TransferCosts(prices, ids)
    rows, cols = np.array([0, 2, 3]), np.array([1, 3])
    for key in [(0, 1), 2, (slice(None), cols), np.ix_(rows, cols)]:
        assert np.array_equal(dense[key], through_ids[key])
    n = len(problem.locations)
    for u in range(n):
        for v in range(n):
            expected = problem.egress_usd(10.0, problem.locations[u], problem.locations[v])
            assert dense[u, v] == pytest.approx(expected)


def test_a_problem_holds_dense_arrays_up_to_its_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = _problem().tier_ids().size
    monkeypatch.setattr(problem_module, "DENSE_ENTRIES", 2 * entries)
    problem = _problem()
    held = [problem.cost_matrix(size).dense is not None for size in (10.0, 20.0, 30.0)]
    assert held == [True, True, False]
    assert problem.cost_matrix(10.0) is problem.cost_matrix(10.0)  # one per size, kept
    for size in (10.0, 20.0, 30.0):
        costs = problem.cost_matrix(size)
        assert np.array_equal(costs[:, :], costs.per_tier[costs.ids])
