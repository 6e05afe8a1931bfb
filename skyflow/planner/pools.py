"""Placements on the user's own machines: SSH pools and Ray clusters (whole nodes), Kubernetes contexts (per pod)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyflow.planner.plan import Placement
from skyflow.planner.policy import Policy, PoolLocation

if TYPE_CHECKING:
    from skyflow.planner.candidates import Request

# What a Kubernetes pod is billed for when the stage does not say: 1 vCPU, 4 GiB per vCPU.
DEFAULT_POD_CPUS = 1.0
DEFAULT_POD_MEMORY_GB_PER_CPU = 4.0
_INSTANCE_PREFIX = {"ssh": "ssh", "kubernetes": "k8s", "ray": "ray"}
# Kinds whose nodes are billed whole, at the pool's hourly_usd.
_WHOLE_NODES = ("ssh", "ray")


def pool_pinned(req: Request, pool: PoolLocation) -> bool:
    """The request names this pool (``infra: ssh/lab``) or its kind (``infra: kubernetes``)."""
    return req.cloud == pool.kind and req.region in (None, pool.short_name)


def requested_cpus(req: Request) -> float:
    return req.cpus.amount if req.cpus else DEFAULT_POD_CPUS


def requested_memory_gb(req: Request) -> float:
    if req.memory is None:
        return requested_cpus(req) * DEFAULT_POD_MEMORY_GB_PER_CPU
    return req.memory.amount * requested_cpus(req) if req.memory.per_cpu else req.memory.amount


def _pinned_elsewhere(req: Request, pool: PoolLocation) -> bool:
    """The request names another cloud or kind of pool, or another pool of this kind."""
    return req.cloud not in (None, pool.kind) or (req.cloud == pool.kind and not pool_pinned(req, pool))


def why_not_fits(req: Request, pool: PoolLocation, num_nodes: int) -> str | None:
    """None when one node of ``pool`` holds the request and the pool has enough nodes; else why not (the
    request's pin is checked apart, by ``_pinned_elsewhere``: no refusal names a pool it does not pin)."""
    if req.instance_type:
        return f"it asks for instance type {req.instance_type}"
    if req.use_spot:
        return "it asks for spot capacity"
    if num_nodes > pool.max_nodes:
        return f"it needs {num_nodes} nodes; the pool has {pool.max_nodes}"
    if req.cpus and pool.cpus is not None and pool.cpus < req.cpus.amount - 1e-9:
        return f"it asks for cpus {req.cpus}; a node has {pool.cpus:g}"
    if req.memory and pool.memory_gb is not None and pool.memory_gb < requested_memory_gb(req) - 1e-9:
        asked = f" ({requested_memory_gb(req):g} GiB)" if req.memory.per_cpu else ""
        return f"it asks for memory {req.memory}{asked}; a node has {pool.memory_gb:g} GiB"
    if req.accelerator:
        name, count = req.accelerator
        have = {k.lower(): v for k, v in pool.accelerators.items()}.get(name.lower(), 0)
        if have < count - 1e-9:
            return f"it asks for {count:g}x {name}; a node has {have:g}"
    return None


def hourly_usd(req: Request, pool: PoolLocation) -> float:
    """Per node: an SSH host's or Ray node's whole price, or a pod's requested amounts times the rates."""
    if pool.kind in _WHOLE_NODES:
        return pool.hourly_usd
    usd = requested_cpus(req) * pool.cpu_hourly_usd + requested_memory_gb(req) * pool.memory_gb_hourly_usd
    if req.accelerator:
        name, count = req.accelerator
        rates = {k.lower(): v for k, v in pool.accelerators_hourly_usd.items()}
        usd += count * rates.get(name.lower(), 0.0)
    return usd


def pool_placements(req: Request, num_nodes: int, hours: float, policy: Policy) -> list[Placement]:
    """A placement on every considered pool that fits the request."""
    found = []
    for pool in policy.pools:
        if not policy.pool_considered(pool, pinned=pool_pinned(req, pool)):
            continue
        if _pinned_elsewhere(req, pool) or why_not_fits(req, pool, num_nodes) is not None:
            continue
        acc = {req.accelerator[0]: req.accelerator[1]} if req.accelerator else {}
        found.append(Placement(
            infra=pool.name, cloud=pool.kind, region=pool.short_name, zone=None,
            instance_type=f"{_INSTANCE_PREFIX[pool.kind]}:{pool.short_name}", accelerators=acc, use_spot=False,
            num_nodes=num_nodes, hourly_usd=hourly_usd(req, pool), hours=hours,
            located_at=pool.egress_location.removesuffix("/*") if pool.egress_location else None))
    return found


def pools_reason(req: Request, num_nodes: int, policy: Policy) -> str | None:
    """Why no pool took the request, for pools it or ``--infra`` names (the no-candidate error)."""
    if req.cloud in _INSTANCE_PREFIX:
        named = [p for p in policy.pools if pool_pinned(req, p)]
        if not named:
            known = ", ".join(p.name for p in policy.pools if p.kind == req.cloud) or "none"
            return (f"no {req.cloud} pool{f' {req.region}' if req.region else ''} is configured (configured: {known}; "
                    "see ssh_pools / kubernetes.contexts / ray_clusters in the skyflow config)")
    elif req.cloud is None and policy.infra is not None:
        named = [p for p in policy.pools if any(e in (p.name, p.kind) for e in policy.infra)]
    else:
        return None
    reasons = []
    for pool in named:
        if not policy.pool_considered(pool, pinned=True):
            reasons.append(f"{pool.name} is left out by --infra or the blocked clouds")
        else:
            reasons.append(f"{pool.name} does not fit: {why_not_fits(req, pool, num_nodes)}")
    return "; ".join(reasons) or None
