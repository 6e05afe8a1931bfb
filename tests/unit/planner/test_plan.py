"""The cost model's exact semantics, constraints, local placement, errors and the JSON shape."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.catalog import load_egress
from skyflow.errors import PlanningError
from skyflow.planner import CachedCopy, LocalCapacity, Plan, Policy, explain_stage, plan_pipeline

CLOUDS = Policy(all_clouds=True)
A100 = {"accelerators": "A100:8"}


def test_compute_is_hourly_times_nodes_times_estimated_hours() -> None:
    cat = catalog(offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8),
                  offer("aws/us-east-1", "p5", 98.0, acc="H100", count=8))
    p = pipeline({"train": {"resources": {"accelerators": ["A100:8", "H100:8"]}, "num_nodes": 2,
                            "estimate": {"hours": {"A100": 10, "H100": 3}}}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS)
    placed = plan.stages["train"]
    assert (placed.instance_type, placed.hours, placed.compute_usd) == ("p5", 3, 98.0 * 2 * 3)
    assert plan.total_usd == pytest.approx(588.0)


def test_egress_pulls_a_stage_next_to_its_data() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 1.0), offer("gcp/us-central1", "n", 0.5))
    p = pipeline({"prep": {"resources": {"infra": "aws/us-east-1"}, "outputs": {"out": 100}},
                  "train": {"inputs": {"data": "prep.out"}}})
    plan = plan_pipeline(p, cat, rules(("*", "*", 0.01)), CLOUDS)
    assert plan.stages["train"].infra == "aws/us-east-1"  # 0.5 cheaper, but moving 100 GB costs 1.0
    plan = plan_pipeline(p, cat, rules(("*", "*", 0.001)), CLOUDS)
    assert plan.stages["train"].infra == "gcp/us-central1"
    assert [(e.artifact, e.target, e.usd) for e in plan.egress] == [("prep.out", "gcp/us-central1", 0.1)]


def test_an_artifact_moves_once_per_destination_region() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 5.0), offer("gcp/us-central1", "n", 1.0))
    p = pipeline({"prep": {"resources": {"infra": "aws/us-east-1"}, "outputs": {"out": 10}},
                  "a": {"inputs": {"x": "prep.out"}}, "b": {"inputs": {"x": "prep.out"}}})
    plan = plan_pipeline(p, cat, rules(("*", "*", 0.3)), CLOUDS)
    # Both on gcp: 2 x 1.0 compute + one move of 10 GB (3.0) = 5 + 2 + 3 = 10 < 5 + 10 on aws.
    assert plan.stages["a"].infra == plan.stages["b"].infra == "gcp/us-central1"
    assert len(plan.egress) == 1 and plan.total_usd == pytest.approx(10.0)


def test_spot_uses_spot_prices_and_drops_offers_without_one() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 1.0, 0.3), offer("lambda/us-east-1", "l", 0.2))
    plan = plan_pipeline(pipeline({"s": {"resources": {"use_spot": True}}}), cat, rules(), CLOUDS)
    assert (plan.stages["s"].infra, plan.stages["s"].hourly_usd, plan.stages["s"].use_spot) == (
        "aws/us-east-1", 0.3, True)


def test_cpus_exact_or_at_least_and_gpu_boxes_serve_cpu_stages() -> None:
    cat = catalog(offer("aws/r", "c8", 0.4, cpus=8), offer("aws/r", "c16", 0.8, cpus=16),
                  offer("lambda/r", "gpu", 0.3, acc="A10", count=1, cpus=30))
    exact = plan_pipeline(pipeline({"s": {"resources": {"cpus": 16}}}), cat, rules(), CLOUDS)
    assert exact.stages["s"].instance_type == "c16"
    at_least = plan_pipeline(pipeline({"s": {"resources": {"cpus": "8+"}}}), cat, rules(), CLOUDS)
    assert at_least.stages["s"].instance_type == "gpu"


def test_local_is_free_when_it_fits_and_forced_with_a_warning() -> None:
    cat = catalog(offer("aws/r", "p4d", 32.0, acc="A100", count=8))
    small = Policy(local=LocalCapacity(cpus=16, memory_gb=64))
    p = pipeline({"prep": {"resources": {"cpus": "8+"}}, "train": {"resources": A100}})
    plan = plan_pipeline(p, cat, rules(), small)
    assert (plan.stages["prep"].infra, plan.stages["prep"].compute_usd) == ("local", 0.0)
    assert plan.stages["train"].infra == "aws/r"
    forced = plan_pipeline(p, cat, rules(), Policy(infra=("local",), local=small.local))
    assert forced.stages["train"].infra == "local"
    assert any("train" in w and "--infra local" in w for w in forced.warnings)


def test_all_clouds_leaves_local_out() -> None:
    cat = catalog(offer("aws/r", "m", 0.4))
    plan = plan_pipeline(pipeline({"s": {}}), cat, rules(), Policy(all_clouds=True, local=LocalCapacity(64, 256)))
    assert plan.stages["s"].infra == "aws/r"
    assert plan_pipeline(pipeline({"s": {}}), cat, rules(), Policy()).stages["s"].infra == "local"


def test_unknown_count_names_the_stage_and_the_counts_there_are() -> None:
    cat = catalog(offer("aws/r", "p4d", 32.0, acc="A100", count=8), offer("aws/r", "a1", 4.0, acc="A100", count=1))
    with pytest.raises(PlanningError, match=r"(?s)stage 'train'.*3x A100.*comes in counts 1, 8, not 3") as info:
        plan_pipeline(pipeline({"train": {"resources": {"accelerators": "A100:3"}}}), cat, rules(), CLOUDS)
    assert info.value.stage == "train"


def test_error_says_which_constraint_removed_the_offers() -> None:
    cat = catalog(offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8))
    p = pipeline({"train": {"resources": A100}})
    with pytest.raises(PlanningError, match=r"1 offer matches the hardware but the clouds considered \(none;.*"
                                            r"nearest: p4d .* in aws/us-east-1 at \$32.00/h"):
        plan_pipeline(p, cat, rules(), Policy(enabled_clouds=("gcp",)))
    with pytest.raises(PlanningError, match="no spot price removed it"):
        plan_pipeline(pipeline({"t": {"resources": {**A100, "use_spot": True}}}), cat, rules(), CLOUDS)
    with pytest.raises(PlanningError, match="region filters"):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, blocked_regions=("us-east-1",)))


def test_deadline_buys_speed_and_budget_buys_time() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8))
    p = pipeline({"t": {"resources": {"accelerators": ["A100:8", "H100:8"]},
                        "estimate": {"hours": {"A100": 10, "H100": 4}}}})
    assert plan_pipeline(p, cat, rules(), CLOUDS).stages["t"].instance_type == "a100"  # $100 vs $120
    fast = plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=5))
    assert (fast.stages["t"].instance_type, fast.total_hours) == ("h100", 4)
    assert plan_pipeline(p, cat, rules(), Policy(all_clouds=True, objective="time")).total_usd == 120
    assert plan_pipeline(p, cat, rules(), Policy(all_clouds=True, objective="time",
                                                 max_cost_usd=110)).stages["t"].instance_type == "a100"
    with pytest.raises(PlanningError, match="no plan meets the constraints"):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=3))


def test_transfer_time_counts_on_the_critical_path() -> None:
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 1.0))
    p = pipeline({"a": {"resources": {"infra": "aws/r"}, "outputs": {"o": 720}},
                  "b": {"resources": {"infra": "gcp/r"}, "inputs": {"x": "a.o"}}})
    assert plan_pipeline(p, cat, rules(), CLOUDS).total_hours == pytest.approx(1 + 720 / 360 + 1)


def test_json_shape_and_baseline() -> None:
    cat = catalog(offer("aws/us-east-1", "p4d", 32.77, 12.0, acc="A100", count=8),
                  offer("gcp/us-central1", "a2", 29.0, acc="A100", count=8), offer("gcp/us-central1", "n2", 0.4))
    p = pipeline({"sft": {"resources": A100, "estimate": 10, "outputs": {"model": 30}},
                  "ppo": {"resources": {**A100, "use_spot": True}, "estimate": 1, "inputs": {"m": "sft.model"}}},
                 name="rlhf")
    plan = plan_pipeline(p, cat, load_egress(), CLOUDS)
    data = plan.to_json()
    assert list(data) == ["pipeline", "objective", "total_usd", "total_hours", "stages", "egress", "baseline", "solver"]
    assert data["baseline"] == {"usd": pytest.approx(290 + 29), "cloud": "gcp"}
    assert data["stages"]["sft"] == {
        "infra": "gcp/us-central1", "cloud": "gcp", "region": "us-central1", "zone": "us-central1-a",
        "instance_type": "a2", "accelerators": {"A100": 8}, "use_spot": False, "num_nodes": 1,
        "hourly_usd": 29.0, "hours": 10.0, "compute_usd": 290.0}
    assert data["egress"] == [{"artifact": "sft.model", "to_stage": "ppo", "source": "gcp/us-central1",
                               "target": "aws/us-east-1", "size_gb": 30.0, "usd": 3.6}]
    assert plan.baseline_usd == pytest.approx(290 + 29) and plan.baseline_cloud == "gcp"


def test_explain_lists_losers_with_their_extra_cost() -> None:
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 2.0), offer("azure/r", "d", 5.0))
    p = pipeline({"s": {}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS)
    alts = explain_stage(p, cat, rules(), CLOUDS, plan, "s")
    assert [(a.placement.infra, a.delta_usd) for a in alts] == [("gcp/r", 1.0), ("azure/r", 4.0)]
    assert alts[0].reason == "+$1.00 compute, +$0.00 egress"
    with pytest.raises(PlanningError, match="no stage 'x'"):
        explain_stage(p, cat, rules(), CLOUDS, plan, "x")


def test_a_cached_copy_far_away_is_reused_when_moving_it_is_cheap_and_recomputed_when_dear() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 2.0), offer("gcp/us-central1", "n", 2.0))
    p = pipeline({"prep": {"outputs": {"out": 100}, "estimate": 3, "resources": {"infra": "aws/us-east-1"}},
                  "train": {"inputs": {"data": "prep.out"}, "resources": {"infra": "aws/us-east-1"}}})
    policy = Policy(all_clouds=True, cached={"prep": (CachedCopy("gcp/us-central1", 100.0),)})
    # Moving 100 GB at $0.01/GB ($1) beats recomputing next to train (3 h at $2/h = $6).
    cheap = plan_pipeline(p, cat, rules(("*", "*", 0.01)), policy)
    placed = cheap.stages["prep"]
    assert (placed.infra, placed.cached, placed.instance_type, placed.compute_usd) == (
        "gcp/us-central1", True, "cached", 0.0)
    assert placed.to_json()["cached"] is True
    assert [(e.artifact, e.source, e.target, e.usd) for e in cheap.egress] == [
        ("prep.out", "gcp/us-central1", "aws/us-east-1", 1.0)]
    assert cheap.total_usd == pytest.approx(1.0 + 2.0)
    (recompute, *_) = explain_stage(p, cat, rules(("*", "*", 0.01)), policy, cheap, "prep")
    assert (recompute.placement.infra, recompute.placement.cached) == ("aws/us-east-1", False)
    assert (recompute.delta_compute_usd, recompute.delta_egress_usd) == (pytest.approx(6.0), pytest.approx(-1.0))  # type: ignore[comparison-overlap]  # pytest.approx equals a float
    # At $0.10/GB the move costs $10: recompute where the consumer is.
    dear = plan_pipeline(p, cat, rules(("*", "*", 0.1)), policy)
    placed = dear.stages["prep"]
    assert (placed.infra, placed.cached, placed.compute_usd) == ("aws/us-east-1", False, 6.0)
    assert "cached" not in placed.to_json()
    assert dear.egress == ()
    (reuse, *_) = explain_stage(p, cat, rules(("*", "*", 0.1)), policy, dear, "prep")
    assert (reuse.placement.infra, reuse.placement.cached) == ("gcp/us-central1", True)
    assert (reuse.delta_compute_usd, reuse.delta_egress_usd) == (pytest.approx(-6.0), pytest.approx(10.0))  # type: ignore[comparison-overlap]  # pytest.approx equals a float


def test_a_cached_copy_where_the_stage_may_not_run_is_still_offered() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 2.0))
    p = pipeline({"prep": {"outputs": {"out": 1}}, "train": {"inputs": {"data": "prep.out"}}})
    policy = Policy(all_clouds=True, cached={"prep": (CachedCopy("aws/us-east-1"), CachedCopy("local"))})
    plan = plan_pipeline(p, cat, rules(("*", "*", 0.5)), policy)
    assert (plan.stages["prep"].infra, plan.stages["prep"].cached) == ("aws/us-east-1", True)
    assert plan.total_usd == pytest.approx(2.0)  # train only; the copy sits next to it


def test_plan_json_round_trips() -> None:
    """What the state DB stores is the typed plan: reading it back gives an equal Plan."""
    cat = catalog(offer("aws/us-east-1", "p4d", 32.77, 12.0, acc="A100", count=8),
                  offer("gcp/us-central1", "a2", 29.0 / 3, acc="A100", count=8), offer("gcp/us-central1", "n2", 0.4))
    p = pipeline({"sft": {"resources": A100, "estimate": 10 / 3, "outputs": {"model": 30}},
                  "ppo": {"resources": {**A100, "use_spot": True}, "inputs": {"m": "sft.model"}}}, name="rlhf")
    plan = plan_pipeline(p, cat, load_egress(), CLOUDS).with_stores(lambda pl: f"s3://b/{pl.cloud}")
    data = json.loads(json.dumps(plan.to_json()))
    again = Plan.from_json(data)
    assert Plan.from_json(again.to_json()) == again and again.total_usd == data["total_usd"]
    assert again.stages.keys() == plan.stages.keys() and again.egress[0].artifact == "sft.model"
    for name, placement in plan.stages.items():  # equal up to the JSON's rounding of money and hours
        assert dataclasses.replace(again.stages[name], hourly_usd=placement.hourly_usd,
                                   hours=placement.hours) == placement
        assert again.stages[name].hourly_usd == pytest.approx(placement.hourly_usd, abs=1e-4)
    assert again.stages["sft"].store_uri == "s3://b/gcp" and again.placement("nowhere").infra == "local"


def test_plan_from_json_rejects_what_is_not_a_plan() -> None:
    with pytest.raises(PlanningError, match="not a stage placement"):
        Plan.from_json({"stages": {"a": {"cloud": "aws"}}})


def test_placement_names_the_alternative_and_disk_it_serves() -> None:
    cat = catalog(offer("aws/r", "big", 9.0, acc="A100", count=8), offer("gcp/r", "small", 1.0, acc="L4", count=1))
    p = pipeline({"t": {"resources": {"any_of": [{"accelerators": "A100:8", "disk_size": 500},
                                                 {"accelerators": "L4:1", "disk_size": 100}]}}})
    placement = plan_pipeline(p, cat, rules(), CLOUDS).stages["t"]
    assert (placement.instance_type, placement.alternative, placement.disk_size_gb) == ("small", 1, 100)


def test_the_baseline_reuses_the_same_cached_copies_and_their_saving_is_told_apart() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 2.0), offer("gcp/us-central1", "n", 1.0))
    p = pipeline({"prep": {"outputs": {"out": 10}, "estimate": 3},
                  "train": {"inputs": {"d": "prep.out"}, "estimate": 2}})
    policy = Policy(all_clouds=True, cached={"prep": (CachedCopy("local", 10.0),)})
    plan = plan_pipeline(p, cat, rules(), policy)
    assert (plan.stages["prep"].infra, plan.stages["prep"].cached, plan.total_usd) == ("local", True, 2.0)
    # All on gcp with the same local copy costs what the plan costs: the cache is no cloud saving...
    assert (plan.baseline_usd, plan.baseline_cloud, plan.saving_usd) == (2.0, "gcp", 0.0)
    # ...it saves the 3 h of prep on gcp, told apart.
    assert (plan.recompute_usd, plan.cached_saving_usd) == (5.0, 3.0)
    data = plan.to_json()
    assert data["recompute_usd"] == 5.0 and Plan.from_json(data).to_json() == data
    fresh = plan_pipeline(p, cat, rules(), dataclasses.replace(policy, cached={}))
    assert (fresh.total_usd, fresh.recompute_usd) == (5.0, None) and "recompute_usd" not in fresh.to_json()


def test_the_baseline_keeps_each_cloud_to_the_infra_given() -> None:
    cat = catalog(offer("aws/r1", "m", 3.0), offer("aws/r2", "m", 1.0), offer("gcp/r1", "n", 2.0))
    plan = plan_pipeline(pipeline({"a": {"estimate": 2}}), cat, rules(), Policy(infra=("aws/r1", "gcp/r1")))
    assert (plan.stages["a"].infra, plan.total_usd) == ("gcp/r1", 4.0)
    # aws's region r2 is cheaper, but outside the infra given: all on aws is r1's $3 an hour
    assert (plan.baseline_usd, plan.baseline_cloud) == (4.0, "gcp")


@pytest.mark.parametrize("kind", ["any_of", "ordered"])
def test_the_baseline_is_on_demand_in_every_alternative_of_a_stage(kind: str) -> None:
    cat = catalog(offer("aws/r", "p4d", 30.0, 10.0, acc="A100", count=8),
                  offer("aws/r", "p5", 60.0, 20.0, acc="H100", count=8),
                  offer("gcp/r", "a2", 29.0, acc="A100", count=8), offer("gcp/r", "n2", 0.4))  # fits no alternative
    p = pipeline({"train": {"estimate": 1, "resources": {kind: [
        {"accelerators": "A100:8", "use_spot": True}, {"accelerators": "H100:8", "use_spot": True}]}}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS)
    assert (plan.stages["train"].infra, plan.stages["train"].use_spot, plan.total_usd) == ("aws/r", True, 10.0)
    assert (plan.baseline_usd, plan.baseline_cloud) == (29.0, "gcp")  # by hand: on demand, so gcp


@pytest.mark.parametrize(("stages", "solver"), [
    ({"a": {"resources": {"infra": "aws/r"}}, "b": {"resources": {"infra": "gcp/r"}, "inputs": {"x": "a.o"}}},
     "trivial"),
    ({"a": {"inputs": {"raw": "raw"}}, "b": {"inputs": {"x": "a.o"}}}, "dp"),
    # two independent parts, each a chain the DP plans
    ({"a": {"inputs": {"raw": "raw"}}, "b": {"inputs": {"x": "a.o"}},
      "c": {"inputs": {"raw": "raw2"}, "outputs": {"o": 10}}, "d": {"inputs": {"x": "c.o"}}}, "dp")])
def test_the_plan_names_the_method_that_found_it(stages: dict[str, Any], solver: str) -> None:
    stages["a"]["outputs"] = {"o": 10}
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 1.5))
    raw = {name: {"uri": f"gs://b/{name}", "infra": "gcp/r", "size_gb": 100} for name in ("raw", "raw2")
           if any(name in stage.get("inputs", {}).values() for stage in stages.values())}
    plan = plan_pipeline(pipeline(stages, raw), cat, rules(("gcp", "*", 0.12), ("aws", "*", 0.09)), CLOUDS)
    assert plan.solver == solver
    assert plan.stats["options"] == (2 if solver == "dp" else 1) * len(stages)  # placements weighed


@pytest.mark.parametrize(("first", "policy", "placed"), [
    # the first choice exists only on a cloud the policy leaves out or that is not enabled...
    ("H100:8", Policy(allowed_clouds=("aws", "gcp")), ("gcp/r", 29.0)),
    ("H100:8", Policy(enabled_clouds=("aws", "gcp")), ("gcp/r", 29.0)),
    # ...or only on the local machine, which --all-clouds leaves out, and which is no cloud
    ("L4:1", Policy(all_clouds=True, local=LocalCapacity(8, 64, {"L4": 1})), ("gcp/r", 29.0)),
    ("L4:1", Policy(local=LocalCapacity(8, 64, {"L4": 1})), ("local", 0.0))])
def test_the_baseline_takes_an_ordered_stages_first_choice_only_where_the_plan_may(
        first: str, policy: Policy, placed: tuple[str, float]) -> None:
    cat = catalog(offer("aws/r", "p4d", 30.0, acc="A100", count=8), offer("gcp/r", "a2", 29.0, acc="A100", count=8),
                  offer("azure/r", "nd", 50.0, acc="H100", count=8))
    p = pipeline({"train": {"estimate": 1, "resources": {"ordered": [{"accelerators": first},
                                                                     {"accelerators": "A100:8"}]}}})
    plan = plan_pipeline(p, cat, rules(), policy)
    assert (plan.stages["train"].infra, plan.total_usd) == placed
    assert (plan.baseline_usd, plan.baseline_cloud) == (29.0, "gcp")


def test_the_baseline_is_the_cheapest_plan_on_one_cloud_whatever_the_objective() -> None:
    # aws/r2 is cheaper with the copy of the input, but slower by the copy's time: the fastest plan
    # stays in aws/r1 by the data; the baseline is still the cheapest one-cloud plan.
    cat = catalog(offer("aws/r1", "m", 2.0), offer("aws/r2", "m", 0.5), offer("gcp/r", "n", 10.0))
    p = pipeline({"a": {"inputs": {"raw": "raw"}}}, {"raw": {"uri": "s3://b/raw", "infra": "aws/r1", "size_gb": 100}})
    plan = plan_pipeline(p, cat, rules(("aws", "aws", 0.002), ("aws", "*", 0.09)), Policy(objective="time"))
    assert (plan.stages["a"].infra, plan.total_usd) == ("aws/r1", 2.0)
    assert (plan.baseline_usd, plan.baseline_cloud) == (pytest.approx(0.7), "aws")  # type: ignore[comparison-overlap]  # pytest.approx equals a float


def test_a_chain_whose_stages_each_read_an_input_is_placed_by_the_dp_next_to_each() -> None:
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 1.0))
    p = pipeline({"a": {"inputs": {"raw": "raw1"}, "outputs": {"o": 1}}, "b": {"inputs": {"raw": "raw2", "x": "a.o"}}},
                 {"raw1": {"uri": "s3://b/raw1", "infra": "aws/r", "size_gb": 100},
                  "raw2": {"uri": "gs://b/raw2", "infra": "gcp/r", "size_gb": 100}})
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    assert plan.solver == "dp"
    assert (plan.stages["a"].infra, plan.stages["b"].infra, plan.total_usd) == ("aws/r", "gcp/r", pytest.approx(2.09))  # type: ignore[comparison-overlap]  # pytest.approx equals a float


@pytest.mark.parametrize("names", [("big", "small"), ("small", "big")])
def test_the_dp_charges_every_artifact_one_stage_reads_from_another(names: tuple[str, str]) -> None:
    # a's two outputs both go to b, pinned to gcp: a next to b ($2 + $2) beats a on aws ($1 + $2) with
    # the copy of both outputs ($9.09); the copy of the small one alone would not pay for the move
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 2.0))
    sizes = {"big": 100, "small": 1}
    p = pipeline({"a": {"outputs": {name: sizes[name] for name in names}},
                  "b": {"inputs": {name: f"a.{name}" for name in names}, "resources": {"infra": "gcp/r"}}})
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    assert plan.solver == "dp"
    assert (plan.stages["a"].infra, plan.total_usd) == ("gcp/r", 4.0)


@pytest.mark.parametrize("big", ["b", "c"])
def test_the_dp_places_a_stage_for_all_its_readers_not_the_first_alone(big: str) -> None:
    # a's readers are pinned apart; a belongs next to the one it sends 200 GB, not the one it sends 1 GB
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 1.0))
    pinned = {"b": "aws/r", "c": "gcp/r"}
    p = pipeline({"a": {"outputs": {"to_b": 200 if big == "b" else 1, "to_c": 200 if big == "c" else 1}},
                  "b": {"inputs": {"x": "a.to_b"}, "resources": {"infra": pinned["b"]}},
                  "c": {"inputs": {"x": "a.to_c"}, "resources": {"infra": pinned["c"]}}})
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    assert plan.solver == "dp"
    assert plan.stages["a"].infra == pinned[big]


def test_the_dp_weighs_a_stages_compute_beside_the_copy_of_its_input() -> None:
    # a reads 100 GB from aws: copying it to gcp ($9) and running there ($1) beats aws's $10.50 an hour;
    # b (on L4s, priced alike) follows a
    cat = catalog(offer("aws/r", "m", 10.5), offer("gcp/r", "n", 1.0),
                  offer("aws/r", "g", 20.0, acc="L4", count=1), offer("gcp/r", "h", 20.0, acc="L4", count=1))
    p = pipeline({"a": {"inputs": {"raw": "raw"}, "outputs": {"o": 10}},
                  "b": {"inputs": {"x": "a.o"}, "resources": {"accelerators": "L4:1"}}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r", "size_gb": 100}})
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    assert plan.solver == "dp"
    assert (plan.stages["a"].infra, plan.stages["b"].infra, plan.total_usd) == ("gcp/r", "gcp/r", pytest.approx(30.0))  # type: ignore[comparison-overlap]  # pytest.approx equals a float


def test_an_output_read_by_two_stages_is_charged_for_each_copy() -> None:
    cat = catalog(offer("aws/r", "m", 1.0), offer("gcp/r", "n", 1.5))
    p = pipeline({"a": {"outputs": {"o": 100}}, "b": {"inputs": {"x": "a.o"}, "resources": {"infra": "gcp/r"}},
                  "c": {"inputs": {"x": "a.o"}}})
    plan = plan_pipeline(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    # all on gcp: $4.50; a and c on aws would save $1 of compute and pay $9 to copy a.o to b
    assert {name: s.infra for name, s in plan.stages.items()} == {"a": "gcp/r", "b": "gcp/r", "c": "gcp/r"}
    assert (plan.total_usd, plan.solver) == (4.5, "milp")


@pytest.mark.parametrize(("policy", "placed", "baseline"), [
    # the first choice is on aws: the plan and the baseline both take it
    (CLOUDS, ("aws/r2", 50.0), (50.0, "aws")),
    # it exists only outside --infra: the second choice, as in the plan (once there was no baseline)
    (Policy(infra=("aws/r", "gcp/r")), ("gcp/r", 29.0), (29.0, "gcp"))])
def test_the_baseline_of_an_ordered_stage_takes_the_first_choice_the_plan_could(
        policy: Policy, placed: tuple[str, float], baseline: tuple[float, str]) -> None:
    cat = catalog(offer("aws/r2", "p5", 50.0, acc="H100", count=8), offer("aws/r", "p4d", 31.0, acc="A100", count=8),
                  offer("gcp/r", "a2", 29.0, acc="A100", count=8))
    p = pipeline({"train": {"estimate": 1, "resources": {"ordered": [{"accelerators": "H100:8"},
                                                                     {"accelerators": "A100:8"}]}}})
    plan = plan_pipeline(p, cat, rules(), policy)
    assert (plan.stages["train"].infra, plan.total_usd) == placed
    assert (plan.baseline_usd, plan.baseline_cloud) == baseline
