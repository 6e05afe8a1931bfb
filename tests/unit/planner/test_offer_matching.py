"""Which offers a stage's resources match, and how a request is named when none is left."""

from __future__ import annotations

from typing import Any

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.errors import PlanningError
from skyflow.planner import Policy, plan_pipeline

CAT = catalog(offer("aws/r", "m", 0.4, cpus=8, mem=32), offer("aws/r", "big", 0.9, cpus=8, mem=64))
CLOUDS = Policy(all_clouds=True)


def _instance(resources: dict[str, Any], policy: Policy = CLOUDS) -> str:
    return plan_pipeline(pipeline({"t": {"resources": resources}}), CAT, rules(), policy).stages["t"].instance_type


def _refusal(resources: dict[str, Any], policy: Policy = CLOUDS) -> str:
    with pytest.raises(PlanningError) as info:
        _instance(resources, policy)
    return str(info.value)


def test_memory_leaves_out_the_cheaper_machine_that_has_too_little() -> None:
    assert _instance({}) == "m"
    assert _instance({"memory": "64+"}) == "big"
    assert _instance({"memory": 64}) == "big"


def test_a_named_instance_must_also_have_what_else_the_stage_asks_for() -> None:
    assert _instance({"instance_type": "big"}) == "big"
    assert "asked for cpus 16, instance m: no offer has cpus 16" in _refusal({"instance_type": "m", "cpus": 16})


def test_a_refusal_names_spot_and_an_empty_request_as_such() -> None:
    assert "asked for spot: 2 offers match the hardware but no spot price removed them all" in _refusal(
        {"use_spot": True})
    assert "asked for any machine: 2 offers match the hardware but the clouds considered (none;" in _refusal(
        {}, Policy(infra=("gcp",)))
