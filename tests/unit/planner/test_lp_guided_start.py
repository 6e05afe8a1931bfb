"""The second start under a time limit: the local search begun from the LP relaxation rounded, kept only
when it is cheaper than the start it is given, and the relaxation's bound raising the floor."""

from __future__ import annotations

import numpy as np
from tables import catalog, infras, offer, pipeline, position, problem_with_every_option, rules

from skyflow.planner import Policy
from skyflow.planner.budget import Budget
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import good_start
from skyflow.planner.solve import _lp_guided_start


def _stuck_case() -> tuple[Problem, list[np.ndarray]]:
    """Two stages each $1 cheaper in aws/near, both reading 1,000 GB kept in aws/far (copied once to
    aws/near, $20), and 1,000 GB between them. Either stage moving to aws/far alone still needs the copy
    and adds $20 or $30 for the transfer; both moving save $20 and pay $2 of compute: single moves are
    stuck, the relaxation is not."""
    cat = catalog(offer("aws/near", "m-near", 0.9), offer("aws/far", "m-far", 1.0))
    p = pipeline({"a": {"estimate": 10, "outputs": {"out": 1000}, "inputs": {"x": "raw"}},
                  "b": {"estimate": 10, "inputs": {"x": "a.out", "y": "raw"}}},
                 inputs={"raw": {"uri": "s3://b/raw", "infra": "aws/far", "size_gb": 1000}})
    return problem_with_every_option(p, cat, rules(("aws/far", "aws/near", 0.02), ("aws/near", "aws/far", 0.03)),
                                     Policy(all_clouds=True))


def test_the_rounded_relaxation_leads_out_of_a_start_single_moves_cannot_leave() -> None:
    problem, keep = _stuck_case()
    stuck = good_start(problem, keep)
    assert infras(problem, stuck) == ["aws/near", "aws/near"]
    model = MilpModel(problem, keep, with_time=False)

    start, floor, _ = _lp_guided_start(problem, keep, model, stuck, Budget(60.0), 0.0)

    assert infras(problem, start) == ["aws/far", "aws/far"]
    assert evaluate(problem, start).total_usd == evaluate(problem, stuck).total_usd - 18.0
    assert floor == evaluate(problem, start).total_usd  # the relaxation is tight here: its bound is the plan


def test_a_given_start_cheaper_than_the_rounding_is_kept_and_a_higher_floor_stays() -> None:
    problem, keep = _stuck_case()
    best = [position(problem, s, "aws/far") for s in range(len(problem.options))]
    model = MilpModel(problem, keep, with_time=False)

    start, floor, _ = _lp_guided_start(problem, keep, model, best, Budget(60.0), 1e9)

    assert start == best and floor == 1e9


def test_on_a_tie_the_given_start_is_kept() -> None:
    cat = catalog(offer("aws/east", "m-east", 1.0), offer("aws/west", "m-west", 1.0))
    problem, keep = problem_with_every_option(pipeline({"a": {"estimate": 10}}), cat, rules(), Policy(all_clouds=True))
    assert len(keep[0]) == 2
    for given in ([0], [1]):
        model = MilpModel(problem, keep, with_time=False)
        start, _, _ = _lp_guided_start(problem, keep, model, given, Budget(60.0), 0.0)
        assert start == given
