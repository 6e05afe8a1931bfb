"""`skyflow plan --explain STAGE` exactly: which alternatives are shown and their figures, the error for a
stage that is not there; and where an input's URI is taken to live."""

from __future__ import annotations

import numpy as np
import pytest
from tables import catalog, offer, pipeline, problem_with_every_option, rules

from skyflow.errors import PlanningError
from skyflow.planner import Policy, explain_stage, plan_pipeline
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import uri_location

CLOUDS = Policy(all_clouds=True)
REGIONS = ["aws/a", "aws/b", "gcp/a", "gcp/b", "azure/a", "azure/b", "aws/c"]


def test_the_five_cheapest_other_places_are_shown_one_per_location_with_their_totals() -> None:
    # per region a cheap and a dear machine: only the cheap one of each region is an alternative
    offers = [offer(loc, f"m{i}", 1.0 + i) for i, loc in enumerate(REGIONS)]
    offers += [offer(loc, f"big{i}", 20.0 + i) for i, loc in enumerate(REGIONS)]
    cat = catalog(*offers)
    p = pipeline({"s": {"estimate": 2}, "t": {"estimate": 1}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS, baseline=False)
    assert plan.stages["s"].infra == "aws/a" and plan.total_usd == pytest.approx(2 * 1.0 + 1 * 1.0)
    alternatives = explain_stage(p, cat, rules(), CLOUDS, plan, "s")
    assert [(a.placement.infra, a.placement.instance_type) for a in alternatives] == [
        ("aws/b", "m1"), ("gcp/a", "m2"), ("gcp/b", "m3"), ("azure/a", "m4"), ("azure/b", "m5")]
    assert [a.delta_usd for a in alternatives] == [pytest.approx(2 * i) for i in range(1, 6)]
    assert [a.total_usd for a in alternatives] == [pytest.approx(plan.total_usd + 2 * i) for i in range(1, 6)]
    every = explain_stage(p, cat, rules(), CLOUDS, plan, "s", limit=50)
    assert [a.placement.instance_type for a in every] == [f"m{i}" for i in range(1, 7)]  # no "big" machine
    assert ([(a.placement.infra, a.total_usd) for a in explain_stage(p, cat, rules(), CLOUDS, plan, "s", limit=2)]  # type: ignore[comparison-overlap]  # pytest.approx equals a float
            == [("aws/b", pytest.approx(5.0)), ("gcp/a", pytest.approx(7.0))])


@pytest.mark.parametrize(("stage", "message"), [
    ("trian", "no stage 'trian' in pipeline 'p'. Did you mean trial, train?"),
    ("zzz", "no stage 'zzz' in pipeline 'p'."),
])
def test_a_stage_not_in_the_pipeline_is_an_error_naming_it_and_close_names(stage: str, message: str) -> None:
    cat = catalog(offer("aws/a", "m", 1.0))
    p = pipeline({"train": {}, "trial": {}, "eval": {}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS, baseline=False)
    with pytest.raises(PlanningError) as caught:
        explain_stage(p, cat, rules(), CLOUDS, plan, stage)
    assert (str(caught.value), caught.value.stage) == (message, stage)


@pytest.mark.parametrize(("uri", "location"), [
    ("s3://bucket/key", "aws/*"), ("S3://Bucket/key", "aws/*"), ("gs://b/k", "gcp/*"),
    ("s3://bucket/odd://name", "aws/*"),  # the scheme is what comes before the first "://"
    ("gs", None),  # a local path that happens to be named like a scheme
    ("data/s3", None), ("file:///tmp/x", None), ("ftp://host/x", None),
])
def test_a_uri_is_placed_in_its_schemes_cloud_and_anything_else_nowhere(uri: str, location: str | None) -> None:
    assert uri_location(uri) == location


def test_the_rounding_of_a_relaxation_takes_each_stages_largest_share() -> None:
    cat = catalog(*(offer(loc, "m", 1.0 + i) for i, loc in enumerate(("aws/a", "gcp/a", "azure/a"))))
    p = pipeline({"s": {}, "t": {}})
    problem, keep = problem_with_every_option(p, cat, rules(), CLOUDS)
    model = MilpModel(problem, keep, with_time=False)
    x = np.zeros(len(model.lb))
    x[model.x[0]] = [0.2, 0.3, 0.5]
    x[model.x[1]] = [0.6, 0.4, 0.0]
    assert model.rounded(x) == [2, 0]


def test_a_faster_dearer_machine_where_a_cheaper_one_is_shown_is_not_an_alternative() -> None:
    """Both machines of a region stay candidates (one is cheaper, one faster); explaining shows the cheapest
    placement per location, so the plan's own region is not offered again on its faster machine."""
    cat = catalog(offer("aws/a", "a100", 1.0, acc="A100", count=1), offer("aws/a", "h100", 3.0, acc="H100", count=1),
                  offer("gcp/a", "a100", 2.0, acc="A100", count=1), offer("gcp/a", "h100", 5.0, acc="H100", count=1))
    p = pipeline({"s": {"resources": {"accelerators": ["A100:1", "H100:1"]},
                        "estimate": {"hours": {"A100": 10, "H100": 5}}}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS, baseline=False)
    assert (plan.stages["s"].infra, plan.stages["s"].instance_type) == ("aws/a", "a100")
    alternatives = explain_stage(p, cat, rules(), CLOUDS, plan, "s", limit=50)
    assert [(a.placement.infra, a.placement.instance_type, a.delta_usd) for a in alternatives] == [  # type: ignore[comparison-overlap]  # pytest.approx equals a float
        ("gcp/a", "a100", pytest.approx(10.0))]


def test_a_pipeline_input_moved_to_its_stage_is_charged_by_name_and_size_and_an_unsized_one_at_nothing() -> None:
    cat = catalog(offer("gcp/r", "n", 1.0))
    inputs = {"raw": {"uri": "s3://b/raw", "infra": "aws/r", "size_gb": 300}, "notes": {"uri": "s3://b/notes"}}
    p = pipeline({"s": {"inputs": {"data": "raw", "extra": "notes"}, "estimate": 1}}, inputs)
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09)), CLOUDS, baseline=False)
    # the unsized input is listed, from its URI's cloud, at no charge: its size is unknown
    assert sorted((e.artifact, e.source, e.target, e.usd) for e in plan.egress) == [
        ("notes", "aws/*", "gcp/r", 0.0), ("raw", "aws/r", "gcp/r", pytest.approx(27.0))]
    assert plan.total_usd == pytest.approx(1.0 + 27.0)
