"""The start the integer program begins from: single-stage moves reach a plan no one move improves, and
moving a stage to another cloud with its neighbours following gets out of what single moves cannot."""

from __future__ import annotations

import numpy as np
from tables import catalog, infras, offer, pipeline, position, problem_with_every_option, rules

from skyflow.planner import Policy
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import good_start

CLOUDS = Policy(all_clouds=True)


def _case(offers: list[tuple[str, float]], egress: list[tuple[str, str, float]]) -> tuple[Problem, list[np.ndarray]]:
    cat = catalog(*(offer(loc, f"m-{loc}", price) for loc, price in offers))
    p = pipeline({"a": {"estimate": 10, "outputs": {"out": 1000}}, "b": {"estimate": 10, "inputs": {"x": "a.out"}}})
    return problem_with_every_option(p, cat, rules(*egress), CLOUDS)


def test_single_moves_take_every_stage_of_a_dear_start_to_the_cheaper_region() -> None:
    problem, keep = _case([("aws/dear", 2.0), ("aws/cheap", 1.0)], [("aws", "aws", 0.001)])
    start = [position(problem, s, "aws/dear") for s in range(2)]
    assert evaluate(problem, start).total_usd > evaluate(problem, [position(problem, s, "aws/cheap")
                                                                   for s in range(2)]).total_usd
    choice = good_start(problem, keep, start)
    assert infras(problem, choice) == ["aws/cheap", "aws/cheap"]


def test_a_stage_moves_to_another_cloud_with_its_neighbour_where_neither_move_alone_pays() -> None:
    # gcp saves $10 of compute per stage; 1,000 GB between the clouds costs $90 or $120: one stage
    # moving alone loses, both moving together save $20
    problem, keep = _case([("aws/r", 2.0), ("gcp/r", 1.0)],
                          [("aws", "aws", 0.0), ("gcp", "gcp", 0.0), ("aws", "*", 0.09), ("gcp", "*", 0.12)])
    start = [position(problem, s, "aws/r") for s in range(2)]
    for s, alone in ((0, [position(problem, 0, "gcp/r"), start[1]]), (1, [start[0], position(problem, 1, "gcp/r")])):
        assert evaluate(problem, alone).total_usd > evaluate(problem, start).total_usd, s
    choice = good_start(problem, keep, start)
    assert infras(problem, choice) == ["gcp/r", "gcp/r"]
    assert evaluate(problem, choice).total_usd == evaluate(problem, start).total_usd - 20.0
