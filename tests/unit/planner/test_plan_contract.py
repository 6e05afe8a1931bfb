"""The Plan contract: the exact JSON a plan reads from (defaults for what is absent, every field kept),
its error messages, the derived values, and `forced_plan` (what `skyflow run --infra CLUSTER` shows)."""

from __future__ import annotations

import json

import pytest
from tables import pipeline

from skyflow.errors import PlanningError
from skyflow.planner import LOCAL_PLACEMENT, Alternative, EgressCharge, Placement, Plan, forced_plan

EKS = "k8s/arn:aws:eks:us-east-1:123456789012:cluster/prod"  # an EKS context: its name holds a "/"


def _placement(**fields: object) -> Placement:
    base: dict[str, object] = {
        "infra": "aws/us-east-1", "cloud": "aws", "region": "us-east-1", "zone": "us-east-1a",
        "instance_type": "p4d.24xlarge", "accelerators": {"A100": 8.0}, "use_spot": True, "num_nodes": 2,
        "hourly_usd": 12.5, "hours": 3.0}
    return Placement(**{**base, **fields})  # type: ignore[arg-type]


# -- Placement JSON ------------------------------------------------------------------------------


def test_placement_json_keeps_every_set_field_and_reads_it_back() -> None:
    placed = _placement(infra="kubernetes/gke", cloud="kubernetes", region="gke", zone=None,
                        instance_type="k8s:gke", accelerators={"L4": 0.5}, num_nodes=3, hourly_usd=1.25, hours=2.0,
                        alternative=2, disk_size_gb=256, located_at="gcp/us-central1",
                        store_uri="gs://bucket/skyflow", hours_source="history")
    data = placed.to_json()
    assert data == {
        "infra": "kubernetes/gke", "cloud": "kubernetes", "region": "gke", "zone": None,
        "instance_type": "k8s:gke", "accelerators": {"L4": 0.5}, "use_spot": True, "num_nodes": 3,
        "hourly_usd": 1.25, "hours": 2.0, "compute_usd": 7.5, "hours_source": "history", "alternative": 2,
        "disk_size_gb": 256, "located_at": "gcp/us-central1", "store_uri": "gs://bucket/skyflow"}
    again = Placement.from_json(json.loads(json.dumps(data)))
    assert again == placed
    assert (again.cloud, again.num_nodes, again.alternative, again.located_at) == (
        "kubernetes", 3, 2, "gcp/us-central1")
    assert again.to_json() == data


def test_placement_json_writes_whole_accelerator_counts_as_ints_and_leaves_defaults_out() -> None:
    data = _placement().to_json()
    assert data == {
        "infra": "aws/us-east-1", "cloud": "aws", "region": "us-east-1", "zone": "us-east-1a",
        "instance_type": "p4d.24xlarge", "accelerators": {"A100": 8}, "use_spot": True, "num_nodes": 2,
        "hourly_usd": 12.5, "hours": 3.0, "compute_usd": 75.0}
    assert type(data["accelerators"]["A100"]) is int


def test_placement_cloud_differs_from_the_infra_prefix_when_stored_so() -> None:
    placed = Placement.from_json({"infra": "k8s/gke", "cloud": "kubernetes"})
    assert (placed.infra, placed.cloud) == ("k8s/gke", "kubernetes")


def test_placement_defaults_for_what_the_json_leaves_out() -> None:
    placed = Placement.from_json({"infra": "gcp/us-central1"})
    assert placed == Placement(infra="gcp/us-central1", cloud="gcp", region=None, zone=None, instance_type="",
                               accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0)
    assert placed.cloud == "gcp"  # the infra's first part when no cloud is stored
    assert placed.instance_type == ""
    assert placed.use_spot is False and placed.cached is False
    assert (placed.num_nodes, placed.hourly_usd, placed.hours, placed.compute_usd) == (1, 0.0, 0.0, 0.0)
    assert (placed.alternative, placed.disk_size_gb, placed.located_at, placed.store_uri) == (0, None, None, None)
    assert placed.hours_source == "estimate"


def test_placement_without_a_cloud_takes_the_first_part_of_a_multi_part_infra() -> None:
    assert Placement.from_json({"infra": "aws/us-east-1/us-east-1a", "cloud": ""}).cloud == "aws"
    assert Placement.from_json({"infra": "local"}).cloud == "local"


def test_placement_empty_strings_read_as_unset() -> None:
    placed = Placement.from_json({"infra": "aws/us-east-1", "region": "", "zone": "", "located_at": "",
                                  "store_uri": "", "instance_type": ""})
    assert (placed.region, placed.zone, placed.located_at, placed.store_uri, placed.instance_type) == (
        None, None, None, None, "")


def test_placement_unknown_hours_source_reads_as_estimate() -> None:
    assert Placement.from_json({"infra": "local", "hours_source": "fallback"}).hours_source == "fallback"
    assert Placement.from_json({"infra": "local", "hours_source": "guess"}).hours_source == "estimate"


def test_cached_placement_json_says_cached_and_no_hours_source() -> None:
    placed = _placement(cached=True, hours_source="fallback", instance_type="cached")
    data = placed.to_json()
    assert data["cached"] is True and "hours_source" not in data
    assert Placement.from_json(data).cached is True


def test_malformed_placement_names_the_data_and_the_fault() -> None:
    with pytest.raises(PlanningError) as info:
        Placement.from_json({"cloud": "aws"})
    assert str(info.value) == "not a stage placement: {'cloud': 'aws'} ('infra')"
    with pytest.raises(PlanningError, match=r"^not a stage placement: \{'infra': 'aws/r', 'num_nodes': 'two'\} "
                                            r"\(invalid literal for int\(\) with base 10: 'two'\)$"):
        Placement.from_json({"infra": "aws/r", "num_nodes": "two"})


def test_malformed_egress_charge_names_the_data_and_the_fault() -> None:
    with pytest.raises(PlanningError) as info:
        EgressCharge.from_json({"artifact": "a.o"})
    assert str(info.value) == "not an egress charge: {'artifact': 'a.o'} ('to_stage')"


# -- Plan JSON -----------------------------------------------------------------------------------


def test_plan_json_round_trips_every_field() -> None:
    plan = Plan(pipeline="rlhf", objective="time", stages={"sft": _placement()},
                egress=(EgressCharge("sft.model", "ppo", "aws/us-east-1", "gcp/us-central1", 30.0, 3.6),),
                total_usd=78.6, total_hours=4.5, baseline_usd=90.0, baseline_cloud="gcp",
                warnings=("stage 'ppo': no spot price", "cached copy ignored"), solver="highs",
                recompute_usd=100.0, gap=0.05, lower_bound_usd=70.0, lower_bound_hours=4.0)
    data = json.loads(json.dumps(plan.to_json()))
    assert data == {
        "pipeline": "rlhf", "objective": "time", "total_usd": 78.6, "total_hours": 4.5,
        "stages": {"sft": _placement().to_json()},
        "egress": [{"artifact": "sft.model", "to_stage": "ppo", "source": "aws/us-east-1",
                    "target": "gcp/us-central1", "size_gb": 30.0, "usd": 3.6}],
        "baseline": {"usd": 90.0, "cloud": "gcp"}, "recompute_usd": 100.0,
        "warnings": ["stage 'ppo': no spot price", "cached copy ignored"], "solver": "highs",
        "gap": 0.05, "lower_bound_usd": 70.0, "lower_bound_hours": 4.0}
    again = Plan.from_json(data)
    assert again == plan
    assert again.objective == "time"
    assert again.warnings == ("stage 'ppo': no spot price", "cached copy ignored")
    assert again.to_json() == data


def test_plan_json_rounds_hours_as_documented() -> None:
    """Hours to 4 decimals in the plan's totals and bound, a placement's hours to 6 (so a stage of a
    few seconds keeps its length); money to 1/100 cent."""
    plan = Plan(pipeline="p", objective="cost", stages={"a": _placement(hours=0.123456789)}, egress=(),
                total_usd=1.234567, total_hours=1.23456789, gap=0.25, lower_bound_hours=0.98765432)
    data = plan.to_json()
    assert (data["total_hours"], data["lower_bound_hours"]) == (1.2346, 0.9877)
    assert data["stages"]["a"]["hours"] == 0.123457
    assert data["total_usd"] == 1.2346


def test_plan_defaults_for_what_the_json_leaves_out() -> None:
    plan = Plan.from_json({})
    assert plan == Plan(pipeline="", objective="cost", stages={}, egress=(), total_usd=0.0, total_hours=0.0)
    assert (plan.pipeline, plan.objective, plan.solver) == ("", "cost", "")
    assert (plan.total_usd, plan.total_hours, plan.gap) == (0.0, 0.0, 0.0)
    assert plan.warnings == () and plan.egress == ()
    assert (plan.baseline_usd, plan.baseline_cloud, plan.recompute_usd) == (None, None, None)
    assert (plan.lower_bound_usd, plan.lower_bound_hours) == (None, None)
    assert plan.to_json() == {"pipeline": "", "objective": "cost", "total_usd": 0.0, "total_hours": 0.0,
                              "stages": {}, "egress": []}


def test_malformed_plan_says_what_is_wrong() -> None:
    with pytest.raises(PlanningError) as info:
        Plan.from_json({"total_usd": "lots"})
    assert str(info.value) == "not a plan: could not convert string to float: 'lots'"
    with pytest.raises(PlanningError, match=r"^not a stage placement: \{'cloud': 'aws'\} \('infra'\)$"):
        Plan.from_json({"stages": {"a": {"cloud": "aws"}}})


def test_plan_derived_values() -> None:
    plan = Plan(pipeline="p", objective="cost", stages={"a": _placement(), "b": _placement(hours=1.0)},
                egress=(EgressCharge("a.o", "b", "aws/r", "gcp/r", 10.0, 0.5),
                        EgressCharge("a.p", "b", "aws/r", "gcp/r", 5.0, 0.25)),
                total_usd=100.75, total_hours=4.0, baseline_usd=120.0, recompute_usd=110.0)
    assert (plan.compute_usd, plan.egress_usd) == (100.0, 0.75)
    assert (plan.saving_usd, plan.cached_saving_usd) == (19.25, 9.25)
    assert plan.placement("a") is plan.stages["a"] and plan.placement("elsewhere") is LOCAL_PLACEMENT


def test_alternative_reason_signs_each_change() -> None:
    worse = Alternative(LOCAL_PLACEMENT, 10.0, 1.0, 1234.5, 0.0, 2.0)
    assert worse.reason == "+$1,234.50 compute, +$0.00 egress, +2.00 h"
    better = Alternative(LOCAL_PLACEMENT, 10.0, -1.0, -1.5, 0.25, -0.5)
    assert better.reason == "-$1.50 compute, +$0.25 egress, -0.50 h"


# -- forced_plan ---------------------------------------------------------------------------------


def test_forced_plan_puts_every_stage_on_the_infra_unpriced_on_its_first_alternative() -> None:
    p = pipeline({"prep": {},
                  "train": {"resources": {"accelerators": ["A100:8", "H100:8"], "use_spot": True, "disk_size": 200},
                            "num_nodes": 2, "estimate": 5},
                  "eval": {"resources": {"any_of": [{"accelerators": "L4:1", "disk_size": 100},
                                                    {"accelerators": "A10:1", "disk_size": 50}]}}},
                 name="rlhf")
    plan = forced_plan(p, EKS)
    assert list(plan.stages) == list(p.order)
    train = plan.stages["train"]
    assert train == Placement(infra=EKS, cloud="k8s", region=None, zone=None, instance_type="",
                              accelerators={"A100": 8.0}, use_spot=True, num_nodes=2, hourly_usd=0.0, hours=0.0,
                              disk_size_gb=200)
    assert (train.infra, train.cloud, train.region, train.zone, train.instance_type) == (EKS, "k8s", None, None, "")
    assert train.use_spot is True and train.num_nodes == 2 and train.disk_size_gb == 200
    assert (train.hourly_usd, train.hours, train.compute_usd) == (0.0, 0.0, 0.0)
    assert (train.alternative, train.cached, train.hours_source, train.store_uri) == (0, False, "estimate", None)
    prep = plan.stages["prep"]
    assert (prep.accelerators, prep.use_spot, prep.num_nodes, prep.disk_size_gb) == ({}, False, 1, None)
    evaluation = plan.stages["eval"]
    assert (evaluation.accelerators, evaluation.disk_size_gb, evaluation.alternative) == ({"L4": 1.0}, 100, 0)
    assert (plan.pipeline, plan.objective, plan.solver) == ("rlhf", "cost", "forced")
    assert (plan.egress, plan.total_usd, plan.total_hours) == ((), 0.0, 0.0)
    assert (plan.compute_usd, plan.egress_usd, plan.baseline_usd, plan.warnings) == (0.0, 0.0, None, ())


def test_forced_plan_json_is_what_a_dry_run_shows_and_reads_back() -> None:
    p = pipeline({"train": {"resources": {"accelerators": "A100:8", "disk_size": 200}}}, name="ft")
    plan = forced_plan(p, "ssh/lab")
    data = plan.to_json()
    assert data == {
        "pipeline": "ft", "objective": "cost", "total_usd": 0.0, "total_hours": 0.0,
        "stages": {"train": {"infra": "ssh/lab", "cloud": "ssh", "region": None, "zone": None, "instance_type": "",
                             "accelerators": {"A100": 8}, "use_spot": False, "num_nodes": 1, "hourly_usd": 0.0,
                             "hours": 0.0, "compute_usd": 0.0, "disk_size_gb": 200}},
        "egress": [], "solver": "forced"}
    again = Plan.from_json(json.loads(json.dumps(data)))
    assert again == plan and again.stages["train"].instance_type == ""


def test_forced_plan_on_a_bare_cluster_name() -> None:
    plan = forced_plan(pipeline({"s": {}}), "kubernetes")
    assert (plan.stages["s"].infra, plan.stages["s"].cloud) == ("kubernetes", "kubernetes")
