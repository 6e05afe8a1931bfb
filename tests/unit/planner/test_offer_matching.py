"""Which offers a stage's resources match, and how a request is named when none is left."""

from __future__ import annotations

from typing import Any

import pytest
from tables import catalog, offer, pipeline, refusal, rules

from skyflow.errors import PlanningError
from skyflow.planner import CachedCopy, Policy, PoolLocation, plan_pipeline
from skyflow.planner.candidates import CandidateFinder, Request

CAT = catalog(offer("aws/r", "m", 0.4, cpus=8, mem=32), offer("aws/r", "big", 0.9, cpus=8, mem=64))
CLOUDS = Policy(all_clouds=True)


def _instance(resources: dict[str, Any], policy: Policy = CLOUDS) -> str:
    return plan_pipeline(pipeline({"t": {"resources": resources}}), CAT, rules(), policy).stages["t"].instance_type


def _refusal(resources: dict[str, Any], policy: Policy = CLOUDS) -> str:
    return refusal(resources, CAT, policy)


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


def test_memory_per_vcpu_is_the_vcpus_times_the_amount() -> None:
    assert _instance({"cpus": 8, "memory": "4x"}) == "m"  # 32 GiB
    assert _instance({"cpus": 8, "memory": "8x"}) == "big"  # 64 GiB


def test_a_zone_pinned_where_zone_names_repeat_across_regions_stays_in_its_region() -> None:
    """Azure names its zones 1, 2 and 3 in every region: the zone alone does not say where."""
    cat = catalog(offer("azure/eastus", "d8", 0.5, zone="1"), offer("azure/westus", "d8", 0.3, zone="1"))
    plan = plan_pipeline(pipeline({"t": {"resources": {"infra": "azure/eastus/1"}}}), cat, rules(), CLOUDS)
    assert (plan.stages["t"].infra, plan.stages["t"].zone) == ("azure/eastus", "1")


def test_the_offers_of_a_request_are_the_cheapest_one_per_location() -> None:
    cat = catalog(offer("aws/a", "m", 0.4), offer("aws/a", "n", 0.3), offer("aws/b", "m", 0.5),
                  offer("aws/b", "n", 0.6), offer("aws/c", "m", 0.2))
    found = CandidateFinder(cat, CLOUDS).offers(Request(None, None, None, None, None, None, None, False))
    assert sorted((cat.offer(i).location, cat.offer(i).instance_type, usd) for i, usd in found) == [
        ("aws/a", "n", 0.3), ("aws/b", "m", 0.5), ("aws/c", "m", 0.2)]


def test_a_cpu_stage_on_a_gpu_machine_is_told_the_cheapest_cpu_machine_that_also_fits() -> None:
    cat = catalog(offer("aws/r", "small", 0.1, cpus=8), offer("aws/r", "large", 2.0, cpus=32, mem=128),
                  offer("aws/r", "gpu", 1.0, acc="T4", count=1, cpus=32, mem=128))
    plan = plan_pipeline(pipeline({"t": {"resources": {"cpus": "32+"}}}), cat, rules(), CLOUDS)
    assert plan.stages["t"].instance_type == "gpu"
    (warning,) = [w for w in plan.warnings if "without accelerators" in w]
    assert "the cheapest without accelerators there is large at $2.00/h" in warning


def test_an_at_least_amount_is_not_met_by_a_fraction_less() -> None:
    cat = catalog(offer("aws/r", "short", 0.2, cpus=8, mem=63.5), offer("aws/r", "big", 0.9, cpus=8, mem=64))
    plan = plan_pipeline(pipeline({"t": {"resources": {"memory": "64+"}}}), cat, rules(), CLOUDS)
    assert plan.stages["t"].instance_type == "big"


def test_the_disk_a_stage_asks_for_is_on_its_placement() -> None:
    plan = plan_pipeline(pipeline({"t": {"resources": {"disk_size": 500}}}), CAT, rules(), CLOUDS)
    assert plan.stages["t"].disk_size_gb == 500


def test_of_alternatives_that_cost_the_same_in_a_place_the_first_listed_is_kept() -> None:
    p = pipeline({"t": {"resources": {"any_of": [{"cpus": 8}, {"memory": 32}]}}})
    placed = plan_pipeline(p, CAT, rules(), CLOUDS).stages["t"]
    assert (placed.instance_type, placed.alternative) == ("m", 0)


def test_a_stage_taken_from_a_cached_copy_is_placed_at_the_copy_free_and_instant() -> None:
    policy = Policy(all_clouds=True, cached={"t": (CachedCopy("aws/r", 1.0),)})
    placed = plan_pipeline(pipeline({"t": {"resources": {"accelerators": "B200:8"}}}), CAT, rules(),
                           policy).stages["t"]
    assert (placed.infra, placed.cloud, placed.region, placed.instance_type, placed.use_spot, placed.hourly_usd,
            placed.hours, placed.cached) == ("aws/r", "aws", "r", "cached", False, 0.0, 0.0, True)


def test_a_refusal_counts_the_nodes_the_stage_asks_for() -> None:
    lab = PoolLocation(name="ssh/lab", kind="ssh", max_nodes=2, cpus=32, memory_gb=256)
    with pytest.raises(PlanningError, match="ssh/lab does not fit: it needs 4 nodes; the pool has 2"):
        plan_pipeline(pipeline({"t": {"num_nodes": 4, "resources": {"cpus": 32}}}), CAT, rules(),
                      Policy(pools=(lab,), infra=("ssh/lab",)))
