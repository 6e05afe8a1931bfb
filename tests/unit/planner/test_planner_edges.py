"""Edges of planning: which transfers a pipeline makes, ordered alternatives, the local machine's memory,
plans that only a cached copy makes possible, policies refused, and searches out of time."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.errors import PlanningError
from skyflow.planner import CachedCopy, LocalCapacity, Plan, Policy, PoolLocation, plan_pipeline
from skyflow.planner import solve as solve_module
from skyflow.planner.budget import Budget
from skyflow.planner.core import _problem
from skyflow.planner.milp import MilpModel
from skyflow.planner.plan import EgressCharge
from skyflow.planner.problem import evaluate
from skyflow.planner.search import good_start
from skyflow.planner.solve import cheapest_per_location, solve_milp

CLOUDS = Policy(all_clouds=True)


def test_raw_uris_move_only_with_a_known_size_and_a_known_cloud() -> None:
    """A raw s3:// input costs egress once its size is known from history, which pulls the stages to aws;
    an https:// input and a local path have no cloud and move for free."""
    cat = catalog(offer("aws/us-east-1", "m", 1.0), offer("gcp/us-central1", "n", 0.9))
    egress = rules(("aws", "aws", 0.01), ("aws", "*", 0.1), ("gcp", "*", 0.1))
    p = pipeline({"a": {"outputs": {"o": 10}, "estimate": 1, "inputs": {"l": "mounted"}},
                  "b": {"inputs": {"x": "a.o", "y": "a.o", "w": "https://example.com/w.bin", "r": "s3://bkt/raw"},
                        "estimate": 1}},
                 {"mounted": {"uri": "/data/x", "size_gb": 5}})
    problem, warnings = _problem(p, cat, egress, CLOUDS)
    assert [(t.artifact, t.size_gb, t.consumers) for t in problem.transfers] == [("a.o", 10.0, (1,))]
    assert warnings == ["input 'mounted' has no infra; moving it is counted as free"]
    unknown = plan_pipeline(p, cat, egress, CLOUDS)
    assert ({s.infra for s in unknown.stages.values()}, unknown.total_usd, unknown.egress) == ({"gcp/us-central1"},
                                                                                              1.8, ())
    assert unknown.warnings == ("input 'mounted' has no infra; moving it is counted as free",)
    seen = Policy(all_clouds=True, observed_size_gb={"s3://bkt/raw": 100.0})
    problem, _ = _problem(p, cat, egress, seen)
    assert [(t.artifact, t.size_gb, t.source) for t in problem.transfers][1] == ("s3://bkt/raw", 100.0, "aws/*")
    known = plan_pipeline(p, cat, egress, seen)
    assert {s.infra for s in known.stages.values()} == {"aws/us-east-1"}
    assert known.total_usd == pytest.approx(2.0 + 1.0)
    assert [(e.artifact, e.source, e.target, e.usd) for e in known.egress] == [
        ("s3://bkt/raw", "aws/*", "aws/us-east-1", 1.0)]


def test_moving_within_one_location_is_free_whatever_the_rules_say() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 1.0), offer("aws/us-west-2", "m", 1.0))
    problem, _ = _problem(pipeline({"a": {}}), cat, rules(("*", "*", 0.5)), CLOUDS)
    assert problem.egress_usd(10.0, "aws/us-east-1", "aws/us-east-1") == 0.0
    assert problem.egress_usd(10.0, "aws/us-east-1", "aws/us-west-2") == pytest.approx(5.0)


def test_ordered_alternatives_take_the_first_that_has_offers_even_when_a_later_one_is_cheaper() -> None:
    cat = catalog(offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8),
                  offer("gcp/us-central1", "a2", 20.0, acc="A100", count=8),
                  offer("gcp/us-central1", "h3", 40.0, acc="H100", count=8))
    first = pipeline({"t": {"resources": {"ordered": [{"accelerators": "H100:8"}, {"accelerators": "A100:8"}]}}})
    placed = plan_pipeline(first, cat, rules(), CLOUDS).stages["t"]
    assert (placed.instance_type, placed.alternative, placed.compute_usd) == ("h3", 0, 40.0)
    second = pipeline({"t": {"resources": {"ordered": [{"accelerators": "V100:8"}, {"accelerators": "A100:8"}]}}})
    placed = plan_pipeline(second, cat, rules(), CLOUDS).stages["t"]
    assert (placed.instance_type, placed.alternative, placed.compute_usd) == ("a2", 1, 20.0)


def test_memory_per_cpu_is_checked_against_the_local_machine() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 0.4, cpus=8, mem=32))
    p = pipeline({"t": {"resources": {"cpus": 8, "memory": "4x"}}})  # 8 vCPU x 4 GiB = 32 GiB
    assert plan_pipeline(p, cat, rules(), Policy(local=LocalCapacity(cpus=8, memory_gb=16))).stages["t"].infra == (
        "aws/us-east-1")
    assert plan_pipeline(p, cat, rules(), Policy(local=LocalCapacity(cpus=8, memory_gb=32))).stages["t"].infra == (
        "local")


def test_a_plan_only_a_cached_copy_makes_possible_has_no_recompute_price() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 0.4))
    p = pipeline({"prep": {"resources": {"accelerators": "B200:8"}, "outputs": {"o": 1}},
                  "train": {"inputs": {"d": "prep.o"}}})
    plan = plan_pipeline(p, cat, rules(), Policy(all_clouds=True, cached={"prep": (CachedCopy("aws/us-east-1", 1.0),)}))
    assert (plan.stages["prep"].cached, plan.total_usd) == (True, 0.4)
    assert plan.recompute_usd is None and plan.cached_saving_usd is None
    assert "recompute_usd" not in plan.to_json()


def test_a_producers_cloud_shares_are_built_once_for_all_its_outputs() -> None:
    """Two outputs of one stage reuse its per-cloud rows, and the program still finds the optimum."""
    cat = catalog(offer("aws/r1", "m", 1.0), offer("aws/r2", "m", 1.2), offer("gcp/r1", "n", 0.8))
    p = pipeline({"a": {"outputs": {"x": 50, "y": 30}, "estimate": 2},
                  "b": {"inputs": {"i": "a.x"}, "estimate": 1, "resources": {"infra": "aws"}},
                  "c": {"inputs": {"i": "a.y"}, "estimate": 1, "resources": {"infra": "gcp"}}})
    problem, _ = _problem(p, cat, rules(("aws", "aws", 0.01), ("aws", "*", 0.09), ("gcp", "*", 0.12)), CLOUDS)
    keep = cheapest_per_location(problem)
    model = MilpModel(problem, keep, with_time=False)
    assert set(model.shares) == {0} and set(model.shares[0]) == {"aws", "gcp"}
    best = min(evaluate(problem, list(c)).total_usd for c in itertools.product(*[k.tolist() for k in keep]))
    assert evaluate(problem, solve_milp(problem, keep)).total_usd == pytest.approx(best)


def test_out_of_time_the_local_search_returns_where_it_began() -> None:
    cat = catalog(offer("aws/r1", "m", 1.0), offer("gcp/r1", "n", 0.5))
    p = pipeline({"a": {"estimate": 2, "outputs": {"o": 40}}, "b": {"estimate": 1, "inputs": {"x": "a.o"}}})
    problem, _ = _problem(p, cat, rules(("*", "*", 0.1)), CLOUDS)
    keep = cheapest_per_location(problem)
    dearest = [int(np.argmax(problem.opt_compute[s][k])) for s, k in enumerate(keep)]
    ticks = iter(itertools.count(0.0, 1000.0))
    spent = Budget(1.0, clock=lambda: next(ticks))
    assert good_start(problem, keep, dearest, budget=spent) == [int(k[d]) for k, d in zip(keep, dearest, strict=True)]
    polished = good_start(problem, keep, dearest)
    assert evaluate(problem, polished).total_usd < evaluate(problem, good_start(problem, keep, dearest,
                                                                                budget=spent)).total_usd


def test_when_both_constrained_searches_stop_the_error_still_names_both_limits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = solve_module.solve_milp_bounded

    def stopped_when_constrained(*args: Any, **kwargs: Any) -> object:
        if kwargs.get("deadline_h") is not None or kwargs.get("max_cost_usd") is not None:
            raise PlanningError("the solver stopped before finding the cheapest plan")
        return real(*args, **kwargs)

    monkeypatch.setattr(solve_module, "solve_milp_bounded", stopped_when_constrained)
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8))
    p = pipeline({"t": {"resources": {"accelerators": ["A100:8", "H100:8"]},
                        "estimate": {"hours": {"A100": 10, "H100": 4}}}})
    with pytest.raises(PlanningError) as info:
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=5, max_cost_usd=110))
    error = info.value
    assert str(error) == (
        "no plan meets the constraints: no plan meets both the deadline of 5 h and the budget of $110.00: the "
        "fastest plan takes 4.00 h and costs $120.00; the cheapest plan costs $100.00 and takes 10.00 h. Raise the "
        "deadline or budget, or allow more clouds and regions.")


@pytest.mark.parametrize(("fields", "message"), [
    ({"objective": "speed"}, "objective must be 'cost' or 'time', got 'speed'"),
    ({"deadline_h": 0}, "deadline_h must be positive, got 0"),
    ({"max_cost_usd": -1}, "max_cost_usd must be >= 0, got -1"),
    ({"transfer_gb_per_hour": 0}, "transfer_gb_per_hour must be positive, got 0"),
])
def test_a_policy_out_of_range_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Policy(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "ssh/lab", "kind": "slurm"}, "pool kind must be 'ssh', 'kubernetes' or 'ray', got 'slurm'"),
    ({"name": "lab", "kind": "ssh"}, "pool name must look like ssh/NAME, got 'lab'"),
    ({"name": "ray/", "kind": "ray"}, "pool name must look like ray/NAME, got 'ray/'"),
    ({"name": "ssh/lab", "kind": "ssh", "max_nodes": 0}, "max_nodes must be >= 1, got 0"),
])
def test_a_malformed_pool_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        PoolLocation(**{"max_nodes": 1, **fields})  # type: ignore[arg-type]


def test_equal_pools_are_one_key() -> None:
    lab = PoolLocation(name="ssh/lab", kind="ssh", max_nodes=2, accelerators={"A100": 8, "L4": 1}, hourly_usd=3.0)
    same = PoolLocation(name="ssh/lab", kind="ssh", max_nodes=2, accelerators={"L4": 1, "A100": 8}, hourly_usd=3.0)
    assert len({lab, same}) == 1
    assert len({lab, PoolLocation(name="ssh/lab", kind="ssh", max_nodes=3, accelerators={"A100": 8, "L4": 1},
                                  hourly_usd=3.0)}) == 2


def test_of_alternatives_at_one_place_and_time_the_cheaper_is_kept_whichever_comes_first() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8))
    for listed in (["A100:8", "H100:8"], ["H100:8", "A100:8"]):
        p = pipeline({"t": {"resources": {"accelerators": listed}, "estimate": 2}})
        problem, _ = _problem(p, cat, rules(), CLOUDS)
        assert [(o.instance_type, o.compute_usd) for o in problem.options[0]] == [("a100", 20.0)]


def test_local_capacities_with_the_same_gpus_are_one_key() -> None:
    first = LocalCapacity(cpus=8, memory_gb=32, gpus={"L4": 1, "T4": 2})
    second = LocalCapacity(cpus=8, memory_gb=32, gpus={"T4": 2, "L4": 1})
    assert first == second and len({first, second}) == 1
    assert len({first, LocalCapacity(cpus=8, memory_gb=32, gpus={"L4": 2})}) == 2


def test_allowed_regions_keep_only_the_regions_named() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 0.4), offer("aws/us-west-2", "m", 0.5),
                  offer("gcp/us-central1", "n", 0.3))
    p = pipeline({"s": {}})
    assert plan_pipeline(p, cat, rules(), Policy(all_clouds=True, allowed_regions=("us-west-2",))).stages[
        "s"].infra == "aws/us-west-2"
    assert plan_pipeline(p, cat, rules(), Policy(all_clouds=True, allowed_regions=("aws/us-east-1", "aws/us-west-2"))
                         ).stages["s"].infra == "aws/us-east-1"


def test_equal_placements_hash_alike_and_malformed_plan_json_is_refused() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 0.4))
    plan = plan_pipeline(pipeline({"a": {}, "b": {}}), cat, rules(), CLOUDS)
    assert len({plan.stages["a"], plan.stages["b"]}) == 1
    with pytest.raises(PlanningError, match=r"^not an egress charge: \{'artifact': 'a'\} \('to_stage'\)$"):
        EgressCharge.from_json({"artifact": "a"})
    with pytest.raises(PlanningError, match=r"^not an egress charge"):
        Plan.from_json({"egress": [{"artifact": "a", "to_stage": "b"}]})
    with pytest.raises(PlanningError, match=r"^not a plan: could not convert string to float: 'lots'$"):
        Plan.from_json({"total_usd": "lots"})


def test_a_gap_without_bounds_is_written_alone() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 0.4))
    plan = plan_pipeline(pipeline({"a": {}}), cat, rules(), CLOUDS)
    data = dataclasses.replace(plan, gap=0.25).to_json()
    assert data["gap"] == 0.25
    assert "lower_bound_usd" not in data and "lower_bound_hours" not in data
    assert Plan.from_json(data).gap == 0.25


def test_an_output_without_size_gb_is_moved_at_the_size_it_had_before_or_at_0_gb_with_a_warning() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 1.0), offer("gcp/us-central1", "n", 1.0))
    p = pipeline({"a": {"resources": {"infra": "aws/us-east-1"}, "outputs": ["o"], "estimate": 1},
                  "b": {"resources": {"infra": "gcp/us-central1"}, "inputs": {"x": "a.o"}, "estimate": 1}})
    egress = rules(("aws", "gcp", 0.1))
    seen = plan_pipeline(p, cat, egress, Policy(all_clouds=True, observed_size_gb={"a.o": 50.0}))
    assert [(e.artifact, e.size_gb, e.usd) for e in seen.egress] == [("a.o", 50.0, pytest.approx(5.0))]  # type: ignore[comparison-overlap]  # pytest.approx equals a float
    assert seen.warnings == ()
    unseen = plan_pipeline(p, cat, egress, CLOUDS)
    assert [(e.artifact, e.size_gb, e.usd) for e in unseen.egress] == [("a.o", 0.0, 0.0)]
    assert unseen.warnings == ("a.o has no size_gb and no history; its transfers are counted as 0 GB",)


def test_two_artifacts_between_the_same_stages_delay_the_consumer_by_the_larger_move() -> None:
    cat = catalog(offer("aws/us-east-1", "m", 1.0), offer("gcp/us-central1", "n", 1.0))
    p = pipeline({"a": {"resources": {"infra": "aws/us-east-1"}, "outputs": {"big": 360, "small": 36}, "estimate": 1},
                  "b": {"resources": {"infra": "gcp/us-central1"}, "inputs": {"x": "a.big", "y": "a.small"},
                        "estimate": 1}})
    plan = plan_pipeline(p, cat, rules(), Policy(all_clouds=True, transfer_gb_per_hour=360.0))
    assert plan.total_hours == pytest.approx(1 + 1 + 1)  # 360 GB at 360 GB/h: the 36 GB move runs beside it
