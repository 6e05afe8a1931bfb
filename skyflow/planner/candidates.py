"""Candidate placements of one stage: catalog offers matching its resources, cheapest per location."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from skyflow.catalog import PriceCatalog
from skyflow.catalog.families import ARCHES, ARM64, X86_64
from skyflow.planner.plan import HoursSource, Placement
from skyflow.planner.policy import LOCAL, Policy
from skyflow.planner.pools import pool_placements
from skyflow.planner.reasons import no_candidates_error
from skyflow.spec.models import Stage
from skyflow.spec.resources import Quantity, Resources

FALLBACK_HOURS = 1.0


@dataclass(frozen=True)
class Request:
    """One concrete alternative of a stage's resources, reduced to what selects offers."""

    accelerator: tuple[str, float] | None
    cpus: Quantity | None
    memory: Quantity | None
    instance_type: str | None
    cloud: str | None
    region: str | None
    zone: str | None
    use_spot: bool
    cpu_arch: str | None = None

    @classmethod
    def of(cls, r: Resources) -> Request:
        cloud, region, zone = r.location()
        acc = (r.accelerators[0].name, r.accelerators[0].count) if r.accelerators else None
        return cls(acc, r.cpus, r.memory, r.instance_type, cloud, region, zone, r.use_spot, r.cpu_arch)

    def describe(self) -> str:
        parts = []
        if self.accelerator:
            parts.append(f"{self.accelerator[1]:g}x {self.accelerator[0]}")
        if self.cpus:
            parts.append(f"cpus {self.cpus}")
        if self.memory:
            parts.append(f"memory {self.memory} GiB" + (" per vCPU" if self.memory.per_cpu else ""))
        if self.instance_type:
            parts.append(f"instance {self.instance_type}")
        if self.cpu_arch:
            parts.append(f"cpu_arch {self.cpu_arch}")
        pin = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        if pin:
            parts.append(f"on {pin}")
        if self.use_spot:
            parts.append("spot")
        return ", ".join(parts) or "any machine"


class CandidateFinder:
    """Finds placements per request; caches by request, since stages repeat the same few."""

    def __init__(self, catalog: PriceCatalog, policy: Policy) -> None:
        self.catalog = catalog
        self.policy = policy
        c = catalog.columns
        considered = set(policy.clouds_considered(catalog.clouds))
        self.cloud_ok = np.array([name in considered for name in catalog.cloud_names] or [False])
        regions = [loc.partition("/") for loc in catalog.location_names]
        self.region_ok = np.array([policy.region_allowed(cl, rg) for cl, _, rg in regions] or [False])
        self._policy_ok = self.cloud_ok[c.cloud] & self.region_ok[c.region] if len(c) else np.zeros(0, bool)
        self._cache: dict[tuple[Request, bool], list[tuple[int, float]]] = {}
        self._placements: dict[tuple[Request, int, float], list[Placement]] = {}

    def hardware_mask(self, req: Request) -> np.ndarray:
        """Offers that have what the request asks for, wherever they are."""
        c, cat = self.catalog.columns, self.catalog
        mask = np.ones(len(c), dtype=bool)
        if req.accelerator:
            acc_id = cat.accelerator_id(req.accelerator[0])
            if acc_id is None:
                return np.zeros(len(c), dtype=bool)
            mask &= (c.acc_name == acc_id) & np.isclose(c.acc_count, req.accelerator[1])
        mask &= _quantity_mask(req.cpus, c.vcpus, c.vcpus)
        mask &= _quantity_mask(req.memory, c.memory_gb, c.vcpus)
        if req.instance_type:
            mask &= np.array([n == req.instance_type for n in cat.instance_names])[c.instance]
        return mask

    def arch(self, req: Request, hardware: np.ndarray) -> str:
        """The architecture to plan on: the request's, else x86_64 unless the accelerator or instance
        type it names exists only on Arm (a GH200, a pinned m7g)."""
        if req.cpu_arch:
            return req.cpu_arch
        c = self.catalog.columns
        if (req.accelerator or req.instance_type) and hardware.any() \
                and not (hardware & (c.arch == ARCHES.index(X86_64))).any():
            return ARM64
        return X86_64

    def arch_mask(self, req: Request, hardware: np.ndarray) -> np.ndarray:
        arch, c = self.arch(req, hardware), self.catalog.columns
        return np.ones(len(c), dtype=bool) if arch == "any" else np.asarray(c.arch == ARCHES.index(arch))

    def sustained_mask(self, req: Request) -> np.ndarray:
        """Burstable (shared-core, credit-based) machines only when the request names the instance type."""
        c = self.catalog.columns
        return np.ones(len(c), dtype=bool) if req.instance_type else ~c.burstable

    def pin_mask(self, req: Request) -> np.ndarray:
        c, cat = self.catalog.columns, self.catalog
        mask = np.ones(len(c), dtype=bool)
        if req.cloud:
            mask &= np.array([n == req.cloud for n in cat.cloud_names])[c.cloud]
        if req.region:
            mask &= np.array([n.partition("/")[2] == req.region for n in cat.location_names])[c.region]
        if req.zone:
            mask &= np.array([n == req.zone for n in cat.zone_names])[c.zone]
        return mask

    def machine_mask(self, req: Request) -> np.ndarray:
        """Offers the request may run on anywhere: hardware, architecture, sustained CPUs."""
        hardware = self.hardware_mask(req)
        return np.asarray(hardware & self.arch_mask(req, hardware) & self.sustained_mask(req))

    def placements(self, req: Request, num_nodes: int, hours: float) -> list[Placement]:
        """A placement on each of `offers(req)`; shared by the stages that ask the same (they are frozen)."""
        key = (req, num_nodes, hours)
        found = self._placements.get(key)
        if found is None:
            found = []
            for offer_index, hourly in self.offers(req):
                offer = self.catalog.offer(offer_index)
                acc = {offer.accelerator_name: offer.accelerator_count} if offer.accelerator_name else {}
                found.append(Placement(
                    infra=offer.location, cloud=offer.cloud, region=offer.region, zone=offer.zone,
                    instance_type=offer.instance_type, accelerators=acc, use_spot=req.use_spot,
                    num_nodes=num_nodes, hourly_usd=hourly, hours=hours))
            self._placements[key] = found
        return found

    def offers(self, req: Request, with_accelerators: bool = True) -> list[tuple[int, float]]:
        """(offer index, hourly USD) of the cheapest offer per location meeting request and policy.

        Offers are per zone, so the index is the zone whose price is returned (on demand or spot
        as the request asks). ``with_accelerators=False`` keeps machines without accelerators only.
        """
        key = (req, with_accelerators)
        found = self._cache.get(key)
        if found is not None:
            return found
        c = self.catalog.columns
        prices = c.spot if req.use_spot else c.price
        mask = self.machine_mask(req) & self.pin_mask(req) & self._policy_ok & ~np.isnan(prices)
        if not with_accelerators:
            mask &= c.acc_name == 0
        order = self.catalog.by_region_and_price(req.use_spot)
        order = order[mask[order]]
        regions = c.region[order]
        first = order[np.r_[True, regions[1:] != regions[:-1]]] if len(order) else order
        found = [(int(i), float(prices[i])) for i in first]
        self._cache[key] = found
        return found


def _quantity_mask(q: Quantity | None, offered: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
    if q is None:
        return np.ones(len(offered), dtype=bool)
    want = q.amount * vcpus if q.per_cpu else q.amount
    if q.at_least or q.per_cpu:
        return np.asarray(offered >= want - 1e-9)
    return np.asarray(np.abs(offered - want) < 1e-9)


def stage_hours(name: str, stage: Stage, accelerator: str | None, policy: Policy, *,
                on_local: bool = False) -> tuple[float, HoursSource]:
    """Hours on ``accelerator`` (on this machine when ``on_local``) and where they come from.

    The median of earlier runs of the same work measured on the same kind of place (this machine,
    or machines with that accelerator: a laptop's demo never prices a cloud GPU); else the stage's
    estimate (``local`` on this machine, else for that accelerator, else its ``default``); else 1
    hour (the fallback).
    """
    seen = policy.observed_hours.get(name, {})
    measured = seen.get(LOCAL if on_local else (accelerator or "default"))
    if measured is not None:
        return measured, "history"
    estimate = stage.estimate.hours
    if on_local and LOCAL in estimate:
        return estimate[LOCAL], "estimate"
    if accelerator and accelerator in estimate:
        return estimate[accelerator], "estimate"
    if "default" in estimate:
        return estimate["default"], "estimate"
    return FALLBACK_HOURS, "fallback"


def stage_placements(name: str, stage: Stage, finder: CandidateFinder) -> tuple[list[Placement], list[str]]:
    """Every location's cheapest placement for the stage (per alternative), and any warnings."""
    policy = finder.policy
    alternatives = stage.resources.alternatives()
    requests = [Request.of(r) for r in alternatives]
    ordered = bool(stage.resources.ordered)
    best: dict[tuple[str, float, bool], Placement] = {}
    warnings: list[str] = []
    for index, req in enumerate(requests):
        found: list[Placement] = []
        accelerator = req.accelerator[0] if req.accelerator else None
        hours, source = stage_hours(name, stage, accelerator, policy, on_local=True)
        local = _local_placement(req, stage.num_nodes, hours, policy)
        if local is not None:
            found.append(replace(local, hours_source=source))
            if not _fits_local(req, policy):
                warnings.append(f"stage {name!r} asks for {req.describe()}, more than the local machine has; "
                                "placed on local because --infra local forces it")
        hours, source = stage_hours(name, stage, accelerator, policy)
        remote = pool_placements(req, stage.num_nodes, hours, policy) + finder.placements(req, stage.num_nodes, hours)
        found += [replace(p, hours_source=source) for p in remote] if source != "estimate" else remote
        disk = alternatives[index].disk_size
        if index or disk is not None:
            found = [replace(f, alternative=index, disk_size_gb=disk) for f in found]
        for p in found:
            key = (p.infra, p.hours, p.cached)
            if key not in best or p.compute_usd < best[key].compute_usd:
                best[key] = p
        if ordered and found:
            break
    for p in cached_placements(name, stage, policy):
        best[(p.infra, p.hours, p.cached)] = p
    if not best:
        raise no_candidates_error(name, requests, finder, stage.num_nodes)
    return sorted(best.values(), key=lambda p: (p.compute_usd, p.hours, p.infra)), warnings


def cached_placements(name: str, stage: Stage, policy: Policy) -> list[Placement]:
    """One placement per cached copy of the stage's outputs: no compute, no hours, at the copy."""
    out = []
    for copy in policy.cached.get(name, ()):
        cloud, _, region = copy.location.partition("/")
        out.append(Placement(infra=copy.location, cloud=cloud, region=region or None, zone=None,
                             instance_type="cached", accelerators={}, use_spot=False, num_nodes=stage.num_nodes,
                             hourly_usd=0.0, hours=0.0, cached=True))
    return out


def _fits_local(req: Request, policy: Policy) -> bool:
    local = policy.local
    if req.cloud not in (None, LOCAL) or req.instance_type or req.use_spot:
        return False
    if req.cpus and local.cpus < req.cpus.amount - 1e-9:
        return False
    if req.memory and local.memory_gb < (req.memory.amount * (req.cpus.amount if req.cpus else 1)
                                         if req.memory.per_cpu else req.memory.amount) - 1e-9:
        return False
    if req.accelerator:
        have = {k.lower(): v for k, v in local.gpus.items()}.get(req.accelerator[0].lower(), 0)
        return have >= req.accelerator[1]
    return True


def _local_placement(req: Request, num_nodes: int, hours: float, policy: Policy) -> Placement | None:
    if not policy.local_considered():
        return None
    if not (_fits_local(req, policy) or (policy.local_forced() and req.cloud in (None, LOCAL))):
        return None
    acc = {req.accelerator[0]: req.accelerator[1]} if req.accelerator else {}
    return Placement(infra=LOCAL, cloud=LOCAL, region=None, zone=None, instance_type=LOCAL,
                     accelerators=acc, use_spot=False, num_nodes=num_nodes, hourly_usd=0.0, hours=hours)
