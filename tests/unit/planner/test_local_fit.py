"""When the machine skyflow runs on is a place for a stage: what the stage asks for must fit it, and a
stage that names an instance type, a cloud or spot capacity is never run there."""

from __future__ import annotations

from typing import Any

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.planner import Policy, plan_pipeline
from skyflow.planner.policy import LocalCapacity

CAT = catalog(offer("aws/r", "m", 0.4, 0.1, cpus=8, mem=32), offer("aws/r", "g", 3.0, acc="A100", count=2, cpus=16),
              offer("aws/r", "g1", 1.5, acc="A100", count=1, cpus=8))


def _where(resources: dict[str, Any], local: LocalCapacity) -> str:
    return plan_pipeline(pipeline({"t": {"resources": resources}}), CAT, rules(), Policy(local=local)).stages["t"].infra


@pytest.mark.parametrize(("resources", "local", "where"), [
    ({"cpus": 8}, LocalCapacity(8, 64), "local"),
    ({"cpus": 8}, LocalCapacity(7.5, 64), "aws/r"),  # half a vCPU short is short
    ({"cpus": 8}, LocalCapacity(4, 64), "aws/r"),
    ({"cpus": 8, "memory": 32}, LocalCapacity(8, 32), "local"),  # an absolute memory is not per vCPU
    ({"cpus": 8, "memory": 32}, LocalCapacity(8, 31.5), "aws/r"),
    ({"cpus": 8, "memory": "4x"}, LocalCapacity(8, 31.5), "aws/r"),
    ({"memory": "4x"}, LocalCapacity(8, 4), "local"),  # per vCPU with no vCPUs asked: one vCPU's worth
    ({"memory": "4x"}, LocalCapacity(8, 3.5), "aws/r"),
    ({"accelerators": "A100:2"}, LocalCapacity(32, 128, {"a100": 2}), "local"),  # the GPU name in any case
    ({"accelerators": "A100:2"}, LocalCapacity(32, 128, {"A100": 1}), "aws/r"),
    ({"accelerators": "A100:1"}, LocalCapacity(32, 128, {"H100": 8}), "aws/r"),  # a GPU it lacks is none
])  # fmt: skip
def test_a_stage_runs_locally_only_when_it_fits(resources: dict[str, Any], local: LocalCapacity, where: str) -> None:
    assert _where(resources, local) == where


@pytest.mark.parametrize("resources", [{"instance_type": "m"}, {"use_spot": True}, {"infra": "aws"}])
def test_a_stage_that_names_an_instance_spot_or_a_cloud_is_not_run_locally(resources: dict[str, Any]) -> None:
    assert _where(resources, LocalCapacity(64, 256)) == "aws/r"


def test_on_the_local_machine_a_stage_takes_the_hours_estimated_for_its_accelerator() -> None:
    p = pipeline({"t": {"resources": {"accelerators": "A100:1"}, "estimate": {"hours": {"A100": 2, "default": 5}}}})
    placed = plan_pipeline(p, CAT, rules(), Policy(local=LocalCapacity(32, 128, {"A100": 1}))).stages["t"]
    assert (placed.infra, placed.hours, placed.hours_source) == ("local", 2, "estimate")


def test_a_stage_forced_onto_a_machine_too_small_is_warned_of_in_full() -> None:
    p = pipeline({"t": {"resources": {"cpus": 16}}, "u": {"resources": {"memory": 128}}})
    plan = plan_pipeline(p, CAT, rules(), Policy(infra=("local",), local=LocalCapacity(8, 64)))
    assert plan.stages["t"].infra == plan.stages["u"].infra == "local"
    assert ("stage 't' asks for cpus 16, more than the local machine has; placed on local because --infra local "
            "forces it") in plan.warnings
    assert ("stage 'u' asks for memory 128 GiB, more than the local machine has; placed on local because --infra "
            "local forces it") in plan.warnings  # every stage's warning, not the last one's only


def test_a_local_placement_is_this_machine_its_gpus_on_demand_and_free() -> None:
    p = pipeline({"t": {"resources": {"accelerators": "A100:1"}}})
    placed = plan_pipeline(p, CAT, rules(), Policy(local=LocalCapacity(32, 128, {"A100": 1}))).stages["t"]
    assert (placed.infra, placed.cloud, placed.instance_type, placed.accelerators, placed.use_spot,
            placed.hourly_usd) == ("local", "local", "local", {"A100": 1}, False, 0.0)
    cpu_only = plan_pipeline(pipeline({"t": {}}), CAT, rules(), Policy(local=LocalCapacity(8, 32))).stages["t"]
    assert cpu_only.accelerators == {}
