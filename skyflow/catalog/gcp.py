"""GCP's catalog prices a GPU apart from the VM it attaches to; join them into whole offers.

SkyPilot's GCP file lists accelerators as rows with an empty InstanceType, priced per zone on top
of a host VM. A100/L4/H100/H200/B200 must ride their own VM family (a2, g2, a3, a4) at a fixed
VM per count; other GPUs (T4, V100, P100, P4, K80) attach to an n1 VM with at least a default
number of vCPUs per GPU and 4 GiB per vCPU, and no more than GCP's per-count maximum.
"""

from __future__ import annotations

from collections import defaultdict

from skyflow.catalog.offers import Offer

# accelerator -> count -> host VM types that carry exactly that many (SkyPilot's mapping).
FIXED_HOSTS: dict[str, dict[int, tuple[str, ...]]] = {
    "a100": {1: ("a2-highgpu-1g",), 2: ("a2-highgpu-2g",), 4: ("a2-highgpu-4g",), 8: ("a2-highgpu-8g",),
             16: ("a2-megagpu-16g",)},
    "a100-80gb": {1: ("a2-ultragpu-1g",), 2: ("a2-ultragpu-2g",), 4: ("a2-ultragpu-4g",),
                  8: ("a2-ultragpu-8g",)},
    "l4": {1: ("g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
           2: ("g2-standard-24",), 4: ("g2-standard-48",), 8: ("g2-standard-96",)},
    "h100": {1: ("a3-highgpu-1g",), 2: ("a3-highgpu-2g",), 4: ("a3-highgpu-4g",), 8: ("a3-highgpu-8g",)},
    "h100-mega": {8: ("a3-megagpu-8g",)},
    "h200": {8: ("a3-ultragpu-8g",)},
    "b200": {8: ("a4-highgpu-8g",)},
}
N1_FAMILIES = ("n1-standard-", "n1-highmem-", "n1-highcpu-")
_DEFAULT_CPUS = {"k80": {1: 4, 2: 8, 4: 16, 8: 32, 16: 64}, "t4": {1: 4, 2: 8, 4: 48},
                 "v100": {1: 8, 2: 16, 4: 32, 8: 64}, "p100": {1: 8, 2: 16, 4: 32, 8: 64}}
_FALLBACK_CPUS = {1: 8, 2: 16, 4: 32, 8: 64, 16: 128}
_MAX_CPUS_MEMORY = {
    "k80": {1: (8, 52), 2: (16, 104), 4: (32, 208), 8: (64, 208)},
    "v100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
    "t4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "p4": {1: (24, 156), 2: (48, 312), 4: (96, 624)},
    "p100": {1: (16, 104), 2: (32, 208), 4: (96, 624)},
}


def join_accelerators(vms: list[Offer], accelerators: list[Offer]) -> list[Offer]:
    """Each accelerator row priced on top of every host VM it may ride in the same zone.

    TPUs (no host VM in the catalog) are dropped: skyflow does not plan TPU pods yet.
    """
    hosts_by_zone: dict[tuple[str, str | None], list[Offer]] = defaultdict(list)
    for vm in vms:
        hosts_by_zone[(vm.region, vm.zone)].append(vm)
    out = []
    for acc in accelerators:
        name = (acc.accelerator_name or "").lower()
        if name.startswith("tpu"):
            continue
        count = int(acc.accelerator_count)
        for host in hosts_by_zone.get((acc.region, acc.zone), ()):
            if _can_host(name, count, host):
                out.append(Offer(
                    cloud=acc.cloud, region=acc.region, zone=acc.zone, instance_type=host.instance_type,
                    accelerator_name=acc.accelerator_name, accelerator_count=acc.accelerator_count,
                    vcpus=host.vcpus, memory_gb=host.memory_gb, price=_add(host.price, acc.price),
                    spot_price=_add(host.spot_price, acc.spot_price),
                ))
    return out


_HOST_ONLY = frozenset(h for by_count in FIXED_HOSTS.values() for hosts in by_count.values() for h in hosts)


def is_host_only(instance_type: str) -> bool:
    """VM types that GCP sells only with their GPUs attached; alone they are no offer."""
    return instance_type in _HOST_ONLY


def _can_host(name: str, count: int, host: Offer) -> bool:
    fixed = FIXED_HOSTS.get(name)
    if fixed is not None:
        return host.instance_type in fixed.get(count, ())
    if not host.instance_type.startswith(N1_FAMILIES):
        return False
    min_cpus = _DEFAULT_CPUS.get(name, _FALLBACK_CPUS).get(count)
    if min_cpus is None or host.vcpus < min_cpus or host.memory_gb < 4 * min_cpus:
        return False
    limit = _MAX_CPUS_MEMORY.get(name, {}).get(count)
    return limit is None or (host.vcpus <= limit[0] and host.memory_gb <= limit[1])


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
