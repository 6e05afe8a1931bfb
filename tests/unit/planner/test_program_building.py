"""How the integer program is handed to HiGHS: per-cloud rates read from one table per artifact size equal
those found from each transfer's own location pairs, and the column-wise matrix holds each row's terms,
a variable repeated in a row summed."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import catalog, offer, pipeline, rules
from test_milp import cloud_level_cases

from skyflow.planner import Policy
from skyflow.planner.core import _problem
from skyflow.planner.milp import MilpModel, _pair_rates
from skyflow.planner.problem import Problem
from skyflow.planner.solve import cheapest_per_location


def _subsets(rng: random.Random, n: int) -> list[int]:
    return sorted(rng.sample(range(n), rng.randint(1, n)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=cloud_level_cases(), seed=st.integers(0, 10**6))
def test_a_sizes_cloud_table_gives_each_transfers_own_rates(problem: Problem, seed: int) -> None:
    model = MilpModel(problem, cheapest_per_location(problem), with_time=False)
    rng = random.Random(seed)
    n = len(problem.locations)
    for size in (1.0, 40.0, 200.0):
        cost = problem.cost_matrix(size)
        for _ in range(10):
            sources, dests = _subsets(rng, n), _subsets(rng, n)
            assert model._cloud_rates(size, cost, sources, dests) == _pair_rates(problem, cost, sources, dests)


def test_rates_that_depend_on_the_region_are_found_per_transfer() -> None:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.5), offer("gcp/c", "n", 1.2))
    p = pipeline({"prep": {"estimate": 1, "outputs": {"o": 100}},
                  "train": {"estimate": 1, "inputs": {"x": "prep.o"}}})
    problem, _ = _problem(p, cat, rules(("aws/a", "gcp", 0.09), ("aws/b", "gcp", 0.01)), Policy(all_clouds=True))
    model = MilpModel(problem, cheapest_per_location(problem), with_time=False)
    assert model._schedules is None  # two prices from aws to gcp
    a, b, c = (problem.loc_index[loc] for loc in ("aws/a", "aws/b", "gcp/c"))
    cost = problem.cost_matrix(100.0)
    assert model._cloud_rates(100.0, cost, [a, b], [c]) is None  # the program goes pair by pair
    assert model._cloud_rates(100.0, cost, [b], [c]) == {("aws", "gcp"): 1.0}


def _dense(model: MilpModel) -> np.ndarray:
    out = np.zeros((len(model.rows), len(model.lb)))
    for r, (terms, _, _) in enumerate(model.rows):
        for var, coef in terms:
            out[r, var] += coef
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=cloud_level_cases(), extra=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-2.0, 0.5, 3.0])),
                                                   min_size=1, max_size=4))
def test_the_column_wise_matrix_holds_every_term_repeats_summed(problem: Problem, extra: list[Any]) -> None:
    model = MilpModel(problem, cheapest_per_location(problem), with_time=True)
    variables = [v % len(model.lb) for v, _ in extra]
    model.add_row([(v, c) for v, (_, c) in zip(variables, extra, strict=True)] * 2, lo=0)  # each term twice
    start, index, value = model._columns()
    rebuilt = np.zeros((len(model.rows), len(model.lb)))
    for col in range(len(model.lb)):
        for k in range(start[col], start[col + 1]):
            rebuilt[index[k], col] += value[k]
        assert list(index[start[col]:start[col + 1]]) == sorted(set(index[start[col]:start[col + 1]]))
    assert np.allclose(rebuilt, _dense(model))
