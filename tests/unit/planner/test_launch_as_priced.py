"""A plan names what it priced: the zone of the price used, and machines an x86 job runs on at full speed."""

from __future__ import annotations

from typing import Any

import pytest
from tables import Hardware, catalog, offer, pipeline, rules

from skyflow.catalog import Offer
from skyflow.errors import PlanningError, SpecError
from skyflow.planner import Policy, plan_pipeline
from skyflow.spec.loader import resolve_data
from skyflow.spec.source import parse_yaml

CLOUDS = Policy(all_clouds=True)
P4D: Hardware = {"acc": "A100", "count": 8, "cpus": 96, "mem": 1152}


def _placed(stages: dict[str, Any], *offers: Offer, policy: Policy = CLOUDS) -> dict[str, tuple[object, ...]]:
    plan = plan_pipeline(pipeline(stages), catalog(*offers), rules(), policy)
    return {name: (p.infra, p.zone, p.instance_type, p.hourly_usd) for name, p in plan.stages.items()}


def test_spot_and_on_demand_each_name_the_zone_whose_price_they_use() -> None:
    # On demand is cheapest in az1, spot in az2 (ca-central-1's p4d in SkyPilot's catalog: $25.25 vs $4.55).
    zones = (offer("aws/ca-central-1", "p4d.24xlarge", 25.25, 25.25, zone="cac1-az1", **P4D),
             offer("aws/ca-central-1", "p4d.24xlarge", 25.30, 4.55, zone="cac1-az2", **P4D))
    a100 = {"accelerators": "A100:8", "infra": "aws/ca-central-1"}
    placed = _placed({"spot": {"resources": {**a100, "use_spot": True}}, "demand": {"resources": a100}}, *zones)
    assert placed == {"spot": ("aws/ca-central-1", "cac1-az2", "p4d.24xlarge", 4.55),
                      "demand": ("aws/ca-central-1", "cac1-az1", "p4d.24xlarge", 25.25)}


def test_a_zone_pin_matches_every_zone_the_offer_is_in_at_that_zones_price() -> None:
    t4 = [offer("gcp/us-central1", "n1-highmem-4", price, zone=f"us-central1-{z}", acc="T4", count=1)
          for z, price in (("a", 0.59), ("b", 0.61), ("c", 0.59), ("f", 0.59))]
    for zone, price in (("b", 0.61), ("c", 0.59), ("f", 0.59)):
        pin = {"accelerators": "T4:1", "infra": f"gcp/us-central1/us-central1-{zone}"}
        assert _placed({"t": {"resources": pin}}, *t4)["t"] == (
            "gcp/us-central1", f"us-central1-{zone}", "n1-highmem-4", price)
    # the older spelling pins the same way
    assert _placed({"t": {"resources": {"accelerators": "T4:1", "cloud": "gcp", "zone": "us-central1-b"}}},
                   *t4)["t"][1:] == ("us-central1-b", "n1-highmem-4", 0.61)
    with pytest.raises(PlanningError, match=r"no zone 'us-central1-x' in gcp/us-central1; did you mean .*us-central1-"):
        _placed({"t": {"resources": {"accelerators": "T4:1", "infra": "gcp/us-central1/us-central1-x"}}}, *t4)


def test_equal_zones_resolve_to_the_first_by_name() -> None:
    zones = [offer("aws/r", "m6i.2xlarge", 0.38, 0.15, zone=z) for z in ("r-c", "r-a", "r-b")]
    assert _placed({"s": {"resources": {"cpus": 8}}}, *zones)["s"][1] == "r-a"
    assert _placed({"s": {"resources": {"cpus": 8, "use_spot": True}}}, *zones)["s"][1] == "r-a"


CPU_MENU = (offer("aws/us-east-1", "m6i.2xlarge", 0.384), offer("aws/us-east-1", "m7g.2xlarge", 0.326),
            offer("aws/us-east-1", "t3.2xlarge", 0.333), offer("azure/eastus", "Standard_B8ps_v2", 0.27),
            offer("azure/eastus", "Standard_D8s_v5", 0.40), offer("gcp/us-central1", "t2a-standard-8", 0.31))


def test_cpu_stages_plan_on_x86_machines_that_do_not_burst_unless_asked() -> None:
    placed = _placed({"plain": {"resources": {"cpus": 8}}, "arm": {"resources": {"cpus": 8, "cpu_arch": "arm64"}},
                      "x86": {"resources": {"cpus": 8, "cpu_arch": "x86_64"}},
                      "pinned": {"resources": {"instance_type": "t3.2xlarge"}}}, *CPU_MENU)
    assert placed["plain"][2] == placed["x86"][2] == "m6i.2xlarge"  # Arm and burstable are cheaper, but left out
    assert placed["arm"][2] == "t2a-standard-8"  # Azure's Standard_B8ps_v2 is Arm too, but bursts
    assert placed["pinned"][2] == "t3.2xlarge"  # naming a burstable type is asking for it
    # `any` takes the cheapest of both architectures
    either = {"s": {"resources": {"cpus": 8, "cpu_arch": "any"}}}
    assert _placed(either, *CPU_MENU)["s"][2] == "t2a-standard-8"
    assert _placed(either, offer("aws/r", "m6i.2xlarge", 0.3), offer("aws/r", "m7g.2xlarge", 0.4))["s"][2] == \
        "m6i.2xlarge"


def test_the_catalogs_arch_column_decides_over_the_family_name() -> None:
    made_up = (offer("aws/r", "z9.2xlarge", 0.1, arch="arm64"), offer("aws/r", "m6i.2xlarge", 0.4))
    assert _placed({"s": {"resources": {"cpus": 8}}}, *made_up)["s"][2] == "m6i.2xlarge"


def test_hardware_that_exists_only_on_arm_takes_arm() -> None:
    gh200 = (offer("lambda/us-east-1", "gpu_1x_gh200", 1.49, acc="GH200", count=1, cpus=64),
             offer("aws/us-east-1", "m7g.16xlarge", 2.6, cpus=64), offer("aws/us-east-1", "m6i.2xlarge", 0.384))
    placed = _placed({"g": {"resources": {"accelerators": "GH200:1"}},
                      "m": {"resources": {"instance_type": "m7g.16xlarge"}},
                      "c": {"resources": {"cpus": "8+"}}}, *gh200)
    assert (placed["g"][2], placed["m"][2], placed["c"][2]) == ("gpu_1x_gh200", "m7g.16xlarge", "m6i.2xlarge")
    with pytest.raises(PlanningError, match=r"the CPU architecture \(x86_64 unless cpu_arch says otherwise; "
                                            r"set cpu_arch: arm64 or any.*nearest: m7g.16xlarge"):
        _placed({"big": {"resources": {"cpus": 64}}}, *gh200[1:])


def test_only_burstable_machines_name_the_reason() -> None:
    with pytest.raises(PlanningError, match=r"leaving out burstable CPUs \(name the instance_type to use one\) "
                                            r"removed it; nearest: t3.2xlarge"):
        _placed({"s": {"resources": {"cpus": 8}}}, offer("aws/r", "t3.2xlarge", 0.333))


def test_cpu_arch_is_checked_where_it_is_written() -> None:
    text = "name: x\nstages:\n  a:\n    run: x\n    resources: {cpus: 2, cpu_arch: armm}\n"
    data, smap = parse_yaml(text, "p.yaml")
    with pytest.raises(SpecError, match=r"p.yaml:5:36: .*cpu_arch must be x86_64, arm64 or any, got 'armm'.*"
                                        r"Did you mean arm, arm64\?"):
        resolve_data(data, smap, "p.yaml", ".")
    data, smap = parse_yaml(text.replace("armm", "AArch64"), "p.yaml")
    assert resolve_data(data, smap, "p.yaml", ".").stages["a"].resources.cpu_arch == "arm64"
