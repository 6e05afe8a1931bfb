"""Locations no plan can tell apart are merged before the search; two that a plan can tell apart (by
the data kept in one, or by what leaving one costs) never are. Each case is built so that the location
the plan needs is the one a merge would drop (the later of the two in the catalog's order)."""

from __future__ import annotations

import pytest
from tables import catalog, offer, pipeline, problem_with_every_option, rules

from skyflow.planner import Policy, plan_pipeline
from skyflow.planner.solve import merge_interchangeable

CLOUDS = Policy(all_clouds=True)


def test_twin_locations_are_merged_into_one() -> None:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.0), offer("aws/c", "m", 2.0))
    # moving between the twins is priced, moving within one is free: they still cannot be told apart
    problem, keep = problem_with_every_option(pipeline({"t": {}}), cat, rules(("aws", "aws", 0.02)), CLOUDS)
    merged = merge_interchangeable(problem, keep)
    assert sorted(problem.options[0][k].infra for k in merged[0]) == ["aws/a", "aws/c"]


def test_the_location_that_holds_an_input_is_not_merged_away() -> None:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.0))
    p = pipeline({"t": {"estimate": 1, "inputs": {"x": "raw"}}},
                 inputs={"raw": {"uri": "s3://bucket/raw", "infra": "aws/b", "size_gb": 100}})
    plan = plan_pipeline(p, cat, rules(("aws", "aws", 0.02)), CLOUDS)
    assert (plan.stages["t"].infra, plan.total_usd) == ("aws/b", 1.0)


def test_two_locations_whose_egress_out_differs_are_not_merged() -> None:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.0), offer("gcp/c", "g", 10.0, acc="T4", count=1))
    p = pipeline({"prep": {"estimate": 1, "outputs": {"o": 100}},
                  "train": {"estimate": 1, "resources": {"accelerators": "T4:1"}, "inputs": {"x": "prep.o"}}})
    plan = plan_pipeline(p, cat, rules(("aws/a", "gcp", 0.09), ("aws/b", "gcp", 0.01)), CLOUDS)
    assert (plan.stages["prep"].infra, plan.total_usd) == ("aws/b", 12.0)


def test_two_locations_whose_egress_in_differs_are_not_merged() -> None:
    cat = catalog(offer("aws/a", "m", 1.0), offer("aws/b", "m", 1.0), offer("gcp/c", "g", 10.0, acc="T4", count=1))
    p = pipeline({"prep": {"estimate": 1, "resources": {"accelerators": "T4:1"}, "outputs": {"o": 100}},
                  "train": {"estimate": 1, "inputs": {"x": "prep.o"}, "resources": {"infra": "aws"}}})
    plan = plan_pipeline(p, cat, rules(("gcp", "aws/a", 0.09), ("gcp", "aws/b", 0.01)), CLOUDS)
    assert (plan.stages["train"].infra, plan.total_usd) == ("aws/b", 12.0)


def test_a_dearer_option_beside_a_stage_input_is_not_pruned_for_its_price_alone() -> None:
    """aws/x is $1 dearer for s, but its 100 GB input is there: moving to aws/y pays $2 of egress. The
    pruning bound must count that input as well as the (tiny) output s sends on."""
    cat = catalog(offer("aws/x", "m", 2.0), offer("aws/y", "m", 1.0))
    p = pipeline({"s": {"estimate": 1, "inputs": {"x": "raw"}, "outputs": {"o": 0.001}},
                  "c": {"estimate": 1, "inputs": {"i": "s.o"}}},
                 inputs={"raw": {"uri": "s3://bucket/raw", "infra": "aws/x", "size_gb": 100}})
    plan = plan_pipeline(p, cat, rules(("aws", "aws", 0.02)), CLOUDS)
    assert plan.stages["s"].infra == "aws/x"
    assert plan.total_usd == pytest.approx(3.00002)
