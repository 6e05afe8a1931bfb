"""Why a stage has no place to run, said in full: the architecture, the zone or region pin, the region
filters, the size asked for, the instance type, and each configured pool that does not fit."""

from __future__ import annotations

import pytest
from tables import Hardware, catalog, offer, pipeline, refusal, rules

from skyflow.catalog import PriceCatalog
from skyflow.planner import Policy, PoolLocation, plan_pipeline

CLOUDS = Policy(all_clouds=True)
CAT = catalog(offer("aws/us-east-1", "m6i.2xlarge", 0.4, zone="us-east-1a"),
              offer("aws/us-east-1", "m6i.2xlarge", 0.41, zone="us-east-1b"),
              offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8, cpus=96, zone="us-east-1a"),
              offer("gcp/us-central1", "g2", 0.8, acc="L4", count=1, zone="us-central1-a"))
LAB = PoolLocation(name="ssh/lab", kind="ssh", max_nodes=2, cpus=32, memory_gb=64, accelerators={"A100": 8},
                   hourly_usd=3.0)
P4D = "p4d (96 vCPU, 32 GiB) in aws/us-east-1 at $32.00/h"


def _reason(resources: dict[str, object], policy: Policy = CLOUDS, cat: PriceCatalog = CAT) -> str:
    return refusal(resources, cat, policy)


def test_an_arm_request_on_x86_machines_names_the_architecture_and_the_nearest_offers() -> None:
    assert _reason({"cpu_arch": "arm64"}) == (
        "  asked for cpu_arch arm64: 3 offers match the hardware but the CPU architecture (cpu_arch arm64) removed "
        "them all; nearest: m6i.2xlarge (8 vCPU, 32 GiB) in aws/us-east-1 at $0.40/h; g2 (8 vCPU, 32 GiB) in "
        f"gcp/us-central1 at $0.80/h; {P4D}")


def test_a_zone_pin_says_where_the_hardware_is_or_which_zones_exist() -> None:
    assert _reason({"accelerators": "A100:8", "infra": "aws/us-east-1/us-east-1b"}) == (
        "  asked for 8x A100, on aws/us-east-1/us-east-1b: 1 offer matches the hardware but the "
        "infra/cloud/region/zone pin removed it (it is offered in zones us-east-1a, not us-east-1b); "
        f"nearest: {P4D}")
    assert _reason({"accelerators": "A100:8", "infra": "aws/us-east-1/us-east-1z"}) == (
        "  asked for 8x A100, on aws/us-east-1/us-east-1z: 1 offer matches the hardware but the "
        "infra/cloud/region/zone pin removed it (no zone 'us-east-1z' in aws/us-east-1; did you mean "
        f"us-east-1b, us-east-1a?); nearest: {P4D}")


def test_a_zone_pin_without_a_region_looks_across_the_clouds_regions() -> None:
    assert _reason({"accelerators": "A100:8", "cloud": "aws", "zone": "us-east-1b"}) == (
        "  asked for 8x A100, on aws/us-east-1b: 1 offer matches the hardware but the infra/cloud/region/zone pin "
        f"removed it (it is offered in zones us-east-1a, not us-east-1b); nearest: {P4D}")


def test_a_pinned_cloud_without_the_hardware_points_elsewhere() -> None:
    assert _reason({"accelerators": "L4:1", "infra": "aws/us-east-1"}) == (
        "  asked for 1x L4, on aws/us-east-1: 1 offer matches the hardware but the infra/cloud/region/zone pin "
        "removed it; nearest: none in aws; elsewhere g2 (8 vCPU, 32 GiB) in gcp/us-central1 at $0.80/h")


def test_a_region_pin_of_any_cloud_gets_a_did_you_mean_from_every_cloud() -> None:
    assert _reason({"accelerators": "A100:8", "infra": "*/us-est-1"}) == (
        "  asked for 8x A100, on us-est-1: 1 offer matches the hardware but the infra/cloud/region/zone pin removed "
        "it (the catalog has no region 'us-est-1'; did you mean us-east-1, us-central1?); "
        f"nearest: {P4D}")


def test_region_filters_get_a_did_you_mean_per_misspelt_entry() -> None:
    allowed = Policy(allowed_regions=("aws/us-est-1", "us-centrl1"))
    assert _reason({"accelerators": "A100:8"}, allowed) == (
        "  asked for 8x A100: 1 offer matches the hardware but the region filters (--infra, allowed/blocked "
        "regions) removed it (aws has no region 'us-est-1'; did you mean us-east-1?; the catalog has no "
        f"region 'us-centrl1'; did you mean us-central1, us-east-1?); nearest: {P4D}")
    infra = Policy(infra=("aws/us-est-1", "ssh/lab"))
    assert _reason({"accelerators": "A100:8"}, infra).endswith(
        "region filters (--infra, allowed/blocked regions) removed it (aws has no region 'us-est-1'; did you "
        f"mean us-east-1?); nearest: {P4D}")
    elsewhere = Policy(allowed_regions=("gcp/us-central1",))
    assert _reason({"accelerators": "A100:8"}, elsewhere).endswith(
        f"region filters (--infra, allowed/blocked regions) removed it; nearest: {P4D}")


def test_a_size_no_offer_of_that_accelerator_has_names_the_nearest_of_that_accelerator() -> None:
    assert _reason({"accelerators": "A100:8", "cpus": 200}) == (
        f"  asked for 8x A100, cpus 200: no 8x A100 offer has cpus 200; nearest: {P4D}")


def test_a_misspelt_instance_type_gets_a_did_you_mean() -> None:
    assert _reason({"instance_type": "m6i.2xlarg"}) == (
        "  asked for instance m6i.2xlarg: no instance type 'm6i.2xlarg'; did you mean m6i.2xlarge?")


@pytest.mark.parametrize(("resources", "why"), [
    ({"memory": 128}, "ssh/lab does not fit: it asks for memory 128; a node has 64 GiB"),
    ({"instance_type": "p4d"}, "ssh/lab does not fit: it asks for instance type p4d"),
    ({"use_spot": True}, "ssh/lab does not fit: it asks for spot capacity"),
], ids=["memory", "instance-type", "spot"])
def test_a_pinned_pool_that_does_not_fit_says_why(resources: dict[str, object], why: str) -> None:
    line = _reason({**resources, "infra": "ssh/lab"}, Policy(pools=(LAB,)))
    assert line.endswith(f": {why}")


def test_a_pinned_pool_left_out_by_the_blocked_clouds_says_so() -> None:
    assert _reason({"infra": "ssh/lab"}, Policy(pools=(LAB,), blocked_clouds=("ssh",))) == (
        "  asked for on ssh/lab: ssh/lab is left out by --infra or the blocked clouds")


def test_a_pool_named_by_infra_adds_its_reason_to_the_catalogs() -> None:
    assert _reason({"cpus": 64}, Policy(pools=(LAB,), infra=("ssh", "aws"))) == (
        "  asked for cpus 64: no offer has cpus 64; largest: p4d (96 vCPU, 32 GiB) in aws/us-east-1 at $32.00/h; "
        "m6i.2xlarge (8 vCPU, 32 GiB) in aws/us-east-1 at $0.40/h; g2 (8 vCPU, 32 GiB) in gcp/us-central1 at "
        "$0.80/h; ssh/lab does not fit: it asks for cpus 64; a node has 32")


# A100s in two regions of aws (the cheaper one farther from us-east-1) and in gcp; a region name two
# other clouds share; on-demand and spot prices apart.
A100: Hardware = {"acc": "A100", "count": 8, "cpus": 96}
SPREAD = catalog(offer("aws/us-east-1", "p4d", 32.0, 12.0, zone="us-east-1a", **A100),
                 offer("aws/us-east-1", "m6i", 0.4, 0.1, zone="us-east-1b"),
                 offer("aws/us-east-1", "p4d", 32.0, 12.0, zone="us-east-1c", **A100),
                 offer("lambda/us-south-1", "cpu", 0.5, zone="us-south-1a"),
                 offer("aws/us-west-2", "p4d", 30.0, 9.0, zone="us-west-2a", **A100),
                 offer("aws/us-west-2", "p4d", 30.0, 9.0, zone="us-west-2b", **A100),
                 offer("gcp/us-central1", "a2", 28.0, 8.0, zone="us-central1-a", **A100),
                 offer("gcp/eastus", "n2", 1.0, 0.3, zone="eastus-a"),
                 offer("azure/eastus", "d8", 1.0, 0.2, zone="eastus-1"))
A2, WEST, EAST = ("a2 (96 vCPU, 32 GiB) in gcp/us-central1", "p4d (96 vCPU, 32 GiB) in aws/us-west-2",
                  "p4d (96 vCPU, 32 GiB) in aws/us-east-1")
PIN_REMOVED = "3 offers match the hardware but the infra/cloud/region/zone pin removed them all"


def _spread_reason(resources: dict[str, object], policy: Policy = CLOUDS) -> str:
    """Why 8x A100 with ``resources`` has no place in SPREAD (the line less its ``asked for ...:``)."""
    return _reason({"accelerators": "A100:8", **resources}, policy, SPREAD).split(": ", 1)[1]


@pytest.mark.parametrize(("resources", "reason"), [
    ({"infra": "oci"}, f"{PIN_REMOVED} (the catalog has no oci offers (clouds: aws, azure, gcp, lambda)); "
                       f"nearest: none in oci; elsewhere {A2} at $28.00/h; {WEST} at $30.00/h; {EAST} at $32.00/h"),
    ({"infra": "aws/eastus"}, f"{PIN_REMOVED} ('eastus' is a region of azure, gcp, not aws); nearest: {WEST} at "
                              f"$30.00/h; {EAST} at $32.00/h"),
    # the region has the zone, not the hardware there: the nearest stay in the region, at spot prices
    ({"infra": "aws/us-east-1/us-east-1b", "use_spot": True},
     f"{PIN_REMOVED} (it is offered in zones us-east-1a, us-east-1c, not us-east-1b); nearest: {EAST} at $12.00/h"),
    ({"infra": "aws/us-east-1/zz"}, f"{PIN_REMOVED} (no zone 'zz' in aws/us-east-1); nearest: {EAST} at $32.00/h"),
    ({"zone": "zz", "use_spot": True}, f"{PIN_REMOVED} (no zone 'zz' in the catalog); nearest: {A2} at $8.00/h; "
                                       f"{WEST} at $9.00/h; {EAST} at $12.00/h"),
    ({"infra": "azure", "use_spot": True}, f"{PIN_REMOVED}; nearest: none in azure; elsewhere {A2} at $8.00/h; "
                                           f"{WEST} at $9.00/h; {EAST} at $12.00/h"),
], ids=["cloud-not-in-catalog", "region-of-other-clouds", "zone-without-the-hardware", "no-such-zone",
        "zone-only-spot", "cloud-without-the-hardware-spot"])
def test_a_pin_no_offer_meets_says_what_is_wrong_with_it_and_the_nearest_at_the_price_asked(
        resources: dict[str, object], reason: str) -> None:
    assert _spread_reason(resources) == reason


def test_clouds_left_out_are_named_with_where_the_choice_came_from() -> None:
    assert _spread_reason({}, Policy(allowed_clouds=("azure", "lambda"))) == (
        "3 offers match the hardware but the clouds considered (azure, lambda; from enabled clouds, --infra, "
        "allowed/blocked "
        f"clouds) removed them all; nearest: {A2} at $28.00/h; {WEST} at $30.00/h; {EAST} at $32.00/h")


def test_an_infra_zone_entry_is_checked_by_its_region_and_an_other_clouds_entry_by_its_cloud() -> None:
    assert _spread_reason({}, Policy(infra=("aws/us-west-9/us-west-9a", "oci/somewhere", "azure/*"))) == (
        "2 offers match the hardware but the region filters (--infra, allowed/blocked regions) removed them all (aws "
        "has no region 'us-west-9'; did you mean us-west-2, us-east-1?; oci has no region 'somewhere'); nearest: "
        f"{WEST} at $30.00/h; {EAST} at $32.00/h")


def test_an_allowed_region_written_with_a_zone_is_not_a_region() -> None:
    assert _spread_reason({}, Policy(allowed_regions=("aws/us-east-1/us-east-1a",))).startswith(
        "3 offers match the hardware but the region filters (--infra, allowed/blocked regions) removed them all (aws "
        "has no region 'us-east-1/us-east-1a'; did you mean us-east-1?)")


def test_infra_entries_of_pools_and_clusters_get_no_region_hint() -> None:
    assert _spread_reason({}, Policy(infra=("kubernetes/ctx", "ray/head", "ssh/lab", "aws/us-est-1"))) == (
        "2 offers match the hardware but the region filters (--infra, allowed/blocked regions) removed them all (aws "
        f"has no region 'us-est-1'; did you mean us-east-1, us-west-2?); nearest: {WEST} at $30.00/h; {EAST} at "
        "$32.00/h")


BIG = PoolLocation(name="ssh/big", kind="ssh", max_nodes=1, cpus=64, memory_gb=256, hourly_usd=5.0)
K8S = PoolLocation(name="kubernetes/ctx", kind="kubernetes", max_nodes=4, cpus=16, memory_gb=64,
                   accelerators={"T4": 1, "L4": 2}, cpu_hourly_usd=0.05, memory_gb_hourly_usd=0.01,
                   accelerators_hourly_usd={"l4": 0.7})
SEE_CONFIG = "see ssh_pools / kubernetes.contexts / ray_clusters in the skyflow config"


@pytest.mark.parametrize(("resources", "policy", "line"), [
    ({"infra": "ssh/nolab"}, Policy(pools=(LAB, BIG, K8S)),
     f"  asked for on ssh/nolab: no ssh pool nolab is configured (configured: ssh/lab, ssh/big; {SEE_CONFIG})"),
    ({"infra": "ray"}, Policy(pools=(LAB,)), f"  asked for on ray: no ray pool is configured (configured: none; "
                                             f"{SEE_CONFIG})"),
    # pinned by the stage, the pool is judged on its size even when every cloud is considered
    ({"infra": "ssh/lab", "memory": 128}, Policy(pools=(LAB,), all_clouds=True),
     "  asked for memory 128 GiB, on ssh/lab: ssh/lab does not fit: it asks for memory 128; a node has 64 GiB"),
    ({"infra": "ssh/lab", "memory": "3x", "cpus": 32}, Policy(pools=(LAB,)),
     "  asked for cpus 32, memory 3x GiB per vCPU, on ssh/lab: ssh/lab does not fit: it asks for memory 3x (96 GiB); "
     "a node has 64 GiB"),
    ({"infra": "ssh/lab", "cpus": 32.5}, Policy(pools=(LAB,)),
     "  asked for cpus 32.5, on ssh/lab: ssh/lab does not fit: it asks for cpus 32.5; a node has 32"),
    ({"infra": "ssh/lab", "memory": 64.5}, Policy(pools=(LAB,)),
     "  asked for memory 64.5 GiB, on ssh/lab: ssh/lab does not fit: it asks for memory 64.5; a node has 64 GiB"),
    ({"infra": "ssh/lab", "accelerators": "T4:1"}, Policy(pools=(LAB,)),
     "  asked for 1x T4, on ssh/lab: ssh/lab does not fit: it asks for 1x T4; a node has 0"),
    # a pod too big for the context: the context's reason alone, as for an SSH pool (no catalog offers)
    ({"infra": "kubernetes/ctx", "cpus": 32}, Policy(pools=(K8S,)),
     "  asked for cpus 32, on kubernetes/ctx: kubernetes/ctx does not fit: it asks for cpus 32; a node has 16"),
    ({"cpus": 128}, Policy(pools=(LAB, BIG), infra=("ssh/lab", "ssh/big")),
     "  asked for cpus 128: no offer has cpus 128; largest: p4d (96 vCPU, 32 GiB) in aws/us-east-1 at $32.00/h; "
     "m6i.2xlarge (8 vCPU, 32 GiB) in aws/us-east-1 at $0.40/h; g2 (8 vCPU, 32 GiB) in gcp/us-central1 at $0.80/h; "
     "ssh/lab does not fit: it asks for cpus 128; a node has 32; ssh/big does not fit: it asks for cpus 128; a node "
     "has 64"),
], ids=["unknown-pool", "no-pool-of-the-kind", "pinned-too-small", "memory-per-cpu", "half-a-cpu-more",
        "half-a-gib-more", "a-gpu-it-lacks", "pod-too-big", "every-named-pool"])
def test_a_pool_that_is_not_there_or_too_small_is_named_with_what_is(resources: dict[str, object], policy: Policy,
                                                                       line: str) -> None:
    assert _reason(resources, policy) == line


@pytest.mark.parametrize(("resources", "pool", "hourly"), [
    ({"cpus": 32, "memory": 64, "accelerators": "A100:8"}, "ssh/lab", 3.0),  # exactly a node: it fits
    ({"cpus": 32, "memory": "2x"}, "ssh/lab", 3.0),  # 64 GiB
    ({"accelerators": "T4:1"}, "kubernetes/ctx", 1 * 0.05 + 4 * 0.01),  # a pod of 1 vCPU, 4 GiB; T4 has no rate
    ({"accelerators": "L4:2", "cpus": 4, "memory": "2x"}, "kubernetes/ctx", 4 * 0.05 + 8 * 0.01 + 2 * 0.7),
], ids=["whole-node", "memory-per-cpu", "default-pod", "pod-with-gpus"])
def test_a_pool_takes_a_request_up_to_a_node_and_bills_nodes_or_pods(resources: dict[str, object], pool: str,
                                                                     hourly: float) -> None:
    plan = plan_pipeline(pipeline({"s": {"resources": {**resources, "infra": pool}}}), CAT, rules(),
                         Policy(pools=(LAB, K8S)))
    assert (plan.stages["s"].infra, plan.stages["s"].hourly_usd) == (pool, pytest.approx(hourly))  # type: ignore[comparison-overlap]  # pytest.approx equals a float


@pytest.mark.parametrize(("accelerator", "line"), [
    ("H100:8", "  asked for 8x H100: no H100 in the catalog; did you mean A100? Run `skyflow catalog gpus` to list "
               "them."),
    ("TPU-V4:8", "  asked for 8x tpu-v4: no tpu-v4 in the catalog. Run `skyflow catalog gpus` to list them."),
], ids=["close-name", "nothing-close"])
def test_an_accelerator_the_catalog_lacks_gets_the_close_names_it_has(accelerator: str, line: str) -> None:
    assert _reason({"accelerators": accelerator}) == line


def test_offers_with_only_the_other_price_say_which_price_they_have() -> None:
    spot_only = catalog(offer("aws/us-east-1", "m6i", None, 0.1), offer("gcp/us-central1", "n2", 0.35, 0.2, cpus=4))
    assert _reason({"cpus": 8}, CLOUDS, spot_only) == (
        "  asked for cpus 8: 1 offer matches the hardware but no on-demand price removed it; nearest: m6i (8 vCPU, "
        "32 GiB) in aws/us-east-1 at $0.10/h spot only")
    demand_only = catalog(offer("aws/us-east-1", "m6i", 0.4), offer("aws/us-east-1", "m7i", 0.5))
    assert _reason({"cpus": 8, "use_spot": True}, CLOUDS, demand_only) == (
        "  asked for cpus 8, spot: 2 offers match the hardware but no spot price removed them all; nearest: m6i "
        "(8 vCPU, 32 GiB) in aws/us-east-1 at $0.40/h on demand only; m7i (8 vCPU, 32 GiB) in aws/us-east-1 at "
        "$0.50/h on demand only")


def test_a_spot_request_cut_by_the_architecture_is_shown_the_nearest_at_spot_prices() -> None:
    assert _spread_reason({"cpu_arch": "arm64", "use_spot": True}) == (
        f"3 offers match the hardware but the CPU architecture (cpu_arch arm64) removed them all; nearest: {A2} at "
        f"$8.00/h; {WEST} at $9.00/h; {EAST} at $12.00/h")


def test_an_accelerator_name_is_matched_to_the_catalogs_whatever_its_case_and_at_most_three_are_offered() -> None:
    assert _reason({"accelerators": "A10G:1"}) == (  # a10g is close to a100 only in lower case
        "  asked for 1x A10G: no A10G in the catalog; did you mean A100? Run `skyflow catalog gpus` to list them.")
    many = catalog(*(offer("aws/us-east-1", f"i{n}", 1.0, acc=n, count=1) for n in ("A100", "B100", "P100", "V100")))
    assert _reason({"accelerators": "H100:1"}, CLOUDS, many) == (  # four as close: three named
        "  asked for 1x H100: no H100 in the catalog; did you mean B100, P100, V100? Run `skyflow catalog gpus` to "
        "list them.")


def test_the_nearest_offers_of_a_size_are_of_the_accelerator_asked_for_at_the_price_asked_for() -> None:
    h100 = offer("aws/us-east-1", "p5", 20.0, 6.0, acc="H100", count=8, cpus=96)
    cat = catalog(offer("aws/us-east-1", "p4d", 32.0, 12.0, acc="A100", count=8, cpus=96), h100)
    assert _reason({"accelerators": "A100:8", "cpus": 200}, CLOUDS, cat) == (
        f"  asked for 8x A100, cpus 200: no 8x A100 offer has cpus 200; nearest: {P4D}")
    assert _reason({"accelerators": "A100:8", "cpus": 200, "use_spot": True}, CLOUDS, cat) == (
        "  asked for 8x A100, cpus 200, spot: no 8x A100 offer has cpus 200; nearest: p4d (96 vCPU, 32 GiB) in "
        "aws/us-east-1 at $12.00/h")


@pytest.mark.parametrize(("resources", "why"), [
    ({"memory": 1000}, "no offer has memory 1000; largest: "),
    ({"cpus": 200, "memory": 1000}, "no offer has cpus 200 and memory 1000; largest: "),
], ids=["memory", "cpus-and-memory"])
def test_a_size_no_offer_has_is_named_with_the_largest_offers(resources: dict[str, object], why: str) -> None:
    assert _reason(resources).split(": ", 1)[1] == (
        f"{why}{P4D}; m6i.2xlarge (8 vCPU, 32 GiB) in aws/us-east-1 at $0.40/h; g2 (8 vCPU, 32 GiB) in gcp/us-central1 "
        "at $0.80/h")


def test_an_instance_type_with_no_close_name_or_many_gets_none_or_three() -> None:
    assert _reason({"instance_type": "zzz"}) == "  asked for instance zzz: no instance type 'zzz'"
    names = ("m6i.large", "m6i.xlarge", "m6i.2xlarge", "m6i.4xlarge")
    sizes = catalog(*(offer("aws/us-east-1", n, 1.0) for n in names))
    assert _reason({"instance_type": "m6i.8xlarge"}, CLOUDS, sizes) == (
        "  asked for instance m6i.8xlarge: no instance type 'm6i.8xlarge'; did you mean m6i.xlarge, m6i.4xlarge, "
        "m6i.2xlarge?")


def test_an_empty_catalog_says_so() -> None:
    assert _reason({}, CLOUDS, catalog()) == "  asked for any machine: the catalog has no offers"


def test_the_nearest_are_the_three_cheapest_at_the_price_asked_for_that_have_it() -> None:
    a100: Hardware = {"acc": "A100", "count": 8, "cpus": 96}
    cat = catalog(offer("aws/us-east-1", "p4d", 30.0, 12.0, **a100), offer("aws/us-west-2", "p4d", 32.0, 9.0, **a100),
                  offer("gcp/us-central1", "a2", 28.0, None, **a100), offer("azure/eastus", "nd", 29.0, 10.0, **a100),
                  offer("lambda/us-south-1", "gpu", 27.0, 11.0, **a100))
    box = "(96 vCPU, 32 GiB) in"
    # spot: the cheapest by spot price, the offer with no spot price left out
    assert _reason({"accelerators": "A100:8", "cpus": 200, "use_spot": True}, CLOUDS, cat).split("nearest: ")[1] == (
        f"p4d {box} aws/us-west-2 at $9.00/h; nd {box} azure/eastus at $10.00/h; gpu {box} lambda/us-south-1 at "
        "$11.00/h")
    assert _reason({"accelerators": "A100:8", "cpus": 200}, CLOUDS, cat).split("nearest: ")[1] == (
        f"gpu {box} lambda/us-south-1 at $27.00/h; a2 {box} gcp/us-central1 at $28.00/h; nd {box} azure/eastus at "
        "$29.00/h")
    unpriced = catalog(offer("aws/us-east-1", "m6i", None, None))
    assert _reason({"cpus": 8}, CLOUDS, unpriced).endswith("nearest: m6i (8 vCPU, 32 GiB) in aws/us-east-1 at no price")
