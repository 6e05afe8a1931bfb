"""SSH pools and Kubernetes contexts as planner locations: fit, price, egress, who considers them."""

from __future__ import annotations

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.catalog import CloudEgress, EgressModel, Tiers
from skyflow.errors import PlanningError
from skyflow.planner import Policy, PoolLocation, plan_pipeline

LAB = PoolLocation(name="ssh/lab", kind="ssh", max_nodes=2, cpus=32, memory_gb=256, accelerators={"A100": 8},
                   hourly_usd=3.0)
GKE = PoolLocation(name="kubernetes/gke", kind="kubernetes", max_nodes=10_000, cpus=16, memory_gb=64,
                   accelerators={"L4": 4}, cpu_hourly_usd=0.05, memory_gb_hourly_usd=0.01,
                   accelerators_hourly_usd={"L4": 0.7}, egress_location="gcp/us-central1")
CAT = catalog(offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8), offer("aws/us-east-1", "m", 0.4),
              offer("gcp/us-central1", "g2", 0.8, acc="L4", count=1), offer("gcp/us-central1", "n2", 0.35))


def test_ssh_pool_bills_whole_nodes_and_wins_when_cheaper() -> None:
    p = pipeline({"train": {"resources": {"accelerators": "A100:1"}, "num_nodes": 2, "estimate": 5}})
    plan = plan_pipeline(p, CAT, rules(), Policy(pools=(LAB,)))
    placed = plan.stages["train"]
    assert (placed.infra, placed.cloud, placed.region, placed.instance_type) == ("ssh/lab", "ssh", "lab", "ssh:lab")
    assert placed.compute_usd == pytest.approx(3.0 * 2 * 5)
    assert placed.accelerators == {"A100": 1}


def test_a_stage_needing_more_nodes_or_a_bigger_node_skips_the_pool() -> None:
    three = pipeline({"t": {"resources": {"accelerators": "A100:8"}, "num_nodes": 3}})
    assert plan_pipeline(three, CAT, rules(), Policy(pools=(LAB,))).stages["t"].infra == "aws/us-east-1"
    big = pipeline({"t": {"resources": {"cpus": "64+"}}})
    with pytest.raises(PlanningError, match="ssh/lab does not fit: it asks for cpus 64\\+; a node has 32"):
        plan_pipeline(big, CAT, rules(), Policy(pools=(LAB,), infra=("ssh/lab",)))


def test_kubernetes_prices_the_pod_request() -> None:
    p = pipeline({"serve": {"resources": {"accelerators": "L4:2", "cpus": 8, "memory": 32}}})
    plan = plan_pipeline(p, CAT, rules(), Policy(pools=(GKE,), infra=("kubernetes",)))
    placed = plan.stages["serve"]
    assert (placed.infra, placed.instance_type) == ("kubernetes/gke", "k8s:gke")
    assert placed.hourly_usd == pytest.approx(8 * 0.05 + 32 * 0.01 + 2 * 0.7)


def test_all_clouds_leaves_pools_out_unless_infra_names_them() -> None:
    p = pipeline({"t": {"resources": {"accelerators": "A100:8"}}})
    assert plan_pipeline(p, CAT, rules(), Policy(pools=(LAB,), all_clouds=True)).stages["t"].infra == "aws/us-east-1"
    named = Policy(pools=(LAB,), all_clouds=True, infra=("ssh/lab", "aws"))
    assert plan_pipeline(p, CAT, rules(), named).stages["t"].infra == "ssh/lab"
    blocked = Policy(pools=(LAB,), blocked_clouds=("ssh",))
    assert plan_pipeline(p, CAT, rules(), blocked).stages["t"].infra == "aws/us-east-1"


def test_resources_infra_pins_a_stage_to_a_pool() -> None:
    p = pipeline({"a": {"resources": {"infra": "ssh/lab"}}, "b": {}})
    plan = plan_pipeline(p, CAT, rules(), Policy(pools=(LAB,), all_clouds=True))
    assert plan.stages["a"].infra == "ssh/lab"
    assert plan.stages["b"].infra == "gcp/us-central1"  # n2 at 0.35; the pool joins only where pinned
    with pytest.raises(PlanningError, match=r"no ssh pool other is configured \(configured: ssh/lab"):
        plan_pipeline(pipeline({"a": {"resources": {"infra": "ssh/other"}}}), CAT, rules(), Policy(pools=(LAB,)))


def test_pool_egress_is_priced_where_the_machines_sit() -> None:
    egress = EgressModel(clouds={"gcp": CloudEgress(Tiers.flat(0.01), Tiers.flat(0.12)),
                                 "aws": CloudEgress(Tiers.flat(0.02), Tiers.flat(0.09))})
    p = pipeline({"prep": {"resources": {"infra": "gcp/us-central1"}, "outputs": {"out": 100}},
                  "serve": {"resources": {"infra": "kubernetes/gke"}, "inputs": {"x": "prep.out"},
                            "outputs": {"log": 10}},
                  "report": {"resources": {"infra": "ssh/lab"}, "inputs": {"x": "serve.log"}}})
    plan = plan_pipeline(p, CAT, egress, Policy(pools=(LAB, GKE)))
    moved = {(e.source, e.target): e.usd for e in plan.egress}
    # GKE sits in gcp/us-central1: free from the same region, internet rate out to the on-prem pool.
    assert moved == {("gcp/us-central1", "kubernetes/gke"): 0.0, ("kubernetes/gke", "ssh/lab"): pytest.approx(1.2)}
    back = pipeline({"a": {"resources": {"infra": "ssh/lab"}, "outputs": {"o": 100}},
                     "b": {"resources": {"infra": "aws/us-east-1"}, "inputs": {"x": "a.o"}}})
    assert plan_pipeline(back, CAT, egress, Policy(pools=(LAB,))).egress_usd == 0.0  # on-prem out: like local


def test_object_store_inputs_pay_their_clouds_egress() -> None:
    egress = EgressModel(clouds={"aws": CloudEgress(Tiers.flat(0.02), Tiers.flat(0.09))})
    p = pipeline({"t": {"inputs": {"d": "raw"}}}, inputs={"raw": {"uri": "s3://bucket/raw", "size_gb": 100}})
    plan = plan_pipeline(p, CAT, egress, Policy(all_clouds=True))
    # Bucket region unknown: even aws/us-east-1 pays the inter-region rate, so gcp's 0.35 + 9.00
    # loses to aws's 0.40 + 2.00.
    assert plan.stages["t"].infra == "aws/us-east-1"
    assert [(e.artifact, e.source, e.target, e.usd) for e in plan.egress] == [  # type: ignore[comparison-overlap]  # pytest.approx equals a float
        ("raw", "aws/*", "aws/us-east-1", pytest.approx(2.0))]
    pinned = pipeline({"t": {"inputs": {"d": "raw"}}},
                      inputs={"raw": {"uri": "s3://bucket/raw", "size_gb": 100, "infra": "aws/us-east-1"}})
    assert plan_pipeline(pinned, CAT, egress, Policy(all_clouds=True)).egress_usd == 0.0
    unsized = pipeline({"t": {"inputs": {"d": "raw"}, "resources": {"infra": "gcp/us-central1"}}},
                       inputs={"raw": {"uri": "s3://bucket/raw"}})
    moved = plan_pipeline(unsized, CAT, egress, Policy(all_clouds=True)).egress
    assert [(e.artifact, e.size_gb, e.usd) for e in moved] == [("raw", 0.0, 0.0)]  # no size_gb: counted as 0 GB


def test_pool_names_are_checked() -> None:
    with pytest.raises(ValueError, match="pool name must look like ssh/NAME"):
        PoolLocation(name="lab", kind="ssh", max_nodes=1)


def test_a_pool_placement_is_on_demand_and_runs_where_its_egress_is_priced() -> None:
    """``located_at`` tells the runner which store is near a pool's machines; a pool is never spot."""
    ray = PoolLocation(name="ray/big", kind="ray", max_nodes=4, cpus=64, memory_gb=512, hourly_usd=2.0,
                       egress_location="aws/*")
    where = {}
    for pool in (LAB, GKE, ray):
        p = pipeline({"t": {"resources": {"infra": pool.name, "cpus": 2}}})
        placed = plan_pipeline(p, CAT, rules(), Policy(pools=(pool,))).stages["t"]
        assert placed.use_spot is False, pool.name
        where[pool.name] = placed.located_at
    assert where == {"ssh/lab": None, "kubernetes/gke": "gcp/us-central1", "ray/big": "aws"}


def test_a_pool_left_out_does_not_hide_the_pools_after_it() -> None:
    p = pipeline({"t": {"resources": {"cpus": 2}}})
    plan = plan_pipeline(p, CAT, rules(), Policy(pools=(LAB, GKE), infra=("kubernetes",)))
    assert plan.stages["t"].infra == "kubernetes/gke"  # ssh/lab, first, is not among --infra's
