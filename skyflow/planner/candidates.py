"""Candidate placements of one stage: catalog offers matching its resources, cheapest per location."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import numpy as np

from skyflow.catalog import PriceCatalog
from skyflow.errors import PlanningError
from skyflow.planner.plan import Placement
from skyflow.planner.policy import LOCAL, Policy
from skyflow.planner.pools import pool_placements, pools_reason
from skyflow.spec.models import Stage
from skyflow.spec.resources import Quantity, Resources


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

    @classmethod
    def of(cls, r: Resources) -> Request:
        cloud, region, zone = r.location()
        acc = (r.accelerators[0].name, r.accelerators[0].count) if r.accelerators else None
        return cls(acc, r.cpus, r.memory, r.instance_type, cloud, region, zone, r.use_spot)

    def describe(self) -> str:
        parts = []
        if self.accelerator:
            parts.append(f"{self.accelerator[1]:g}x {self.accelerator[0]}")
        if self.cpus:
            parts.append(f"cpus {self.cpus}")
        if self.memory:
            parts.append(f"memory {self.memory} GiB")
        if self.instance_type:
            parts.append(f"instance {self.instance_type}")
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
        self._cloud_ok = np.array([name in considered for name in catalog.cloud_names] or [False])
        regions = [loc.partition("/") for loc in catalog.location_names]
        self._region_ok = np.array([policy.region_allowed(cl, rg) for cl, _, rg in regions] or [False])
        self._policy_ok = self._cloud_ok[c.cloud] & self._region_ok[c.region] if len(c) else np.zeros(0, bool)
        self._cache: dict[Request, list[tuple[int, float]]] = {}

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

    def offers(self, req: Request) -> list[tuple[int, float]]:
        """(offer index, hourly USD) of the cheapest offer per location meeting request and policy."""
        found = self._cache.get(req)
        if found is not None:
            return found
        c = self.catalog.columns
        prices = c.spot if req.use_spot else c.price
        mask = self.hardware_mask(req) & self.pin_mask(req) & self._policy_ok & ~np.isnan(prices)
        idx = np.nonzero(mask)[0]
        order = idx[np.lexsort((prices[idx], c.region[idx]))]
        _, first = np.unique(c.region[order], return_index=True)
        found = [(int(i), float(prices[i])) for i in order[first]]
        self._cache[req] = found
        return found


def _quantity_mask(q: Quantity | None, offered: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
    if q is None:
        return np.ones(len(offered), dtype=bool)
    want = q.amount * vcpus if q.per_cpu else q.amount
    if q.at_least or q.per_cpu:
        return np.asarray(offered >= want - 1e-9)
    return np.asarray(np.abs(offered - want) < 1e-9)


def stage_hours(name: str, stage: Stage, accelerator: str | None, policy: Policy) -> float:
    """From the stage's estimate, else the run history's median, else 1 hour."""
    if stage.estimate.hours:
        return stage.estimate.hours_for(accelerator)
    seen = policy.observed_hours.get(name, {})
    if accelerator and accelerator in seen:
        return seen[accelerator]
    return seen.get("default", 1.0)


def stage_placements(name: str, stage: Stage, finder: CandidateFinder) -> tuple[list[Placement], list[str]]:
    """Every location's cheapest placement for the stage (per alternative), and any warnings."""
    policy, cat = finder.policy, finder.catalog
    alternatives = stage.resources.alternatives()
    requests = [Request.of(r) for r in alternatives]
    ordered = bool(stage.resources.ordered)
    best: dict[tuple[str, float, bool], Placement] = {}
    warnings: list[str] = []
    for index, req in enumerate(requests):
        found: list[Placement] = []
        local = _local_placement(name, stage, req, policy)
        if local is not None:
            found.append(local)
            if not _fits_local(req, policy):
                warnings.append(f"stage {name!r} asks for {req.describe()}, more than the local machine has; "
                                "placed on local because --infra local forces it")
        hours = stage_hours(name, stage, req.accelerator[0] if req.accelerator else None, policy)
        found += pool_placements(req, stage.num_nodes, hours, policy)
        for offer_index, hourly in finder.offers(req):
            offer = cat.offer(offer_index)
            acc = {offer.accelerator_name: offer.accelerator_count} if offer.accelerator_name else {}
            found.append(Placement(
                infra=offer.location, cloud=offer.cloud, region=offer.region, zone=req.zone or offer.zone,
                instance_type=offer.instance_type, accelerators=acc, use_spot=req.use_spot,
                num_nodes=stage.num_nodes, hourly_usd=hourly, hours=hours))
        for p in (replace(f, alternative=index, disk_size_gb=alternatives[index].disk_size) for f in found):
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


def _local_placement(name: str, stage: Stage, req: Request, policy: Policy) -> Placement | None:
    if not policy.local_considered():
        return None
    if not (_fits_local(req, policy) or (policy.local_forced() and req.cloud in (None, LOCAL))):
        return None
    acc = {req.accelerator[0]: req.accelerator[1]} if req.accelerator else {}
    hours = stage_hours(name, stage, req.accelerator[0] if req.accelerator else None, policy)
    return Placement(infra=LOCAL, cloud=LOCAL, region=None, zone=None, instance_type=LOCAL,
                     accelerators=acc, use_spot=False, num_nodes=stage.num_nodes, hourly_usd=0.0, hours=hours)


def no_candidates_error(name: str, requests: list[Request], finder: CandidateFinder,
                        num_nodes: int = 1) -> PlanningError:
    """Say what the stage asked for, the nearest offers, and which constraint removed them."""
    lines = [f"stage {name!r}: no place to run it."]
    for req in requests:
        pools = pools_reason(req, num_nodes, finder.policy)
        pinned = req.cloud in ("ssh", "kubernetes")
        why = pools if pinned else "; ".join(r for r in (_why_none(req, finder), pools) if r)
        lines.append(f"  asked for {req.describe()}: {why}")
    return PlanningError("\n".join(lines), stage=name)


def _why_none(req: Request, finder: CandidateFinder) -> str:
    cat, c, policy = finder.catalog, finder.catalog.columns, finder.policy
    hardware = finder.hardware_mask(req)
    if not hardware.any():
        return _nearest_hardware(req, finder)
    steps = [
        ("the infra/cloud/region/zone pin", finder.pin_mask(req)),
        ("no spot price" if req.use_spot else "no on-demand price", ~np.isnan(c.spot if req.use_spot else c.price)),
        (_clouds_reason(policy, cat.clouds), finder._cloud_ok[c.cloud]),
        ("the region filters (--infra, allowed/blocked regions)", finder._region_ok[c.region]),
    ]
    mask = hardware
    for reason, step in steps:
        kept = mask & step
        if not kept.any():
            nearest = _describe_offers(cat, np.nonzero(mask)[0], req.use_spot)
            return f"{int(mask.sum())} offers match the hardware but {reason} removed them all; nearest: {nearest}"
        mask = kept
    return "no offer is left"


def _clouds_reason(policy: Policy, catalog_clouds: tuple[str, ...]) -> str:
    considered = policy.clouds_considered(catalog_clouds)
    return (f"the clouds considered ({', '.join(considered) or 'none'}; from enabled clouds, --infra, "
            "allowed/blocked clouds)")


def _nearest_hardware(req: Request, finder: CandidateFinder) -> str:
    cat, c = finder.catalog, finder.catalog.columns
    if req.accelerator:
        name, count = req.accelerator
        acc_id = cat.accelerator_id(name)
        if acc_id is None:
            close = difflib.get_close_matches(name.lower(), [a.lower() for a in cat.accelerator_names if a], n=3)
            names = [a for a in cat.accelerator_names if a and a.lower() in close]
            return (f"no {name} in the catalog" + (f"; did you mean {', '.join(names)}?" if names else "")
                    + " Run `skyflow catalog gpus` to list them.")
        counts = sorted({float(x) for x in c.acc_count[c.acc_name == acc_id]})
        if not np.any(np.isclose(counts, count)):
            return f"{name} comes in counts {', '.join(f'{x:g}' for x in counts)}, not {count:g}"
        same = (c.acc_name == acc_id) & np.isclose(c.acc_count, count)
        return f"no {count:g}x {name} offer has {_sizes(req)}; nearest: " + _describe_offers(
            cat, np.nonzero(same)[0], req.use_spot)
    if req.instance_type and req.instance_type not in cat.instance_names:
        close = difflib.get_close_matches(req.instance_type, list(cat.instance_names), n=3)
        return f"no instance type {req.instance_type!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
    largest = np.argsort(-c.vcpus)[:3]
    return f"no offer has {_sizes(req)}; largest: " + _describe_offers(cat, largest, False)


def _sizes(req: Request) -> str:
    return " and ".join(p for p in (f"cpus {req.cpus}" if req.cpus else "",
                                    f"memory {req.memory}" if req.memory else "") if p) or "that"


def _describe_offers(cat: PriceCatalog, indices: np.ndarray, use_spot: bool) -> str:
    col = cat.columns.spot if use_spot else cat.columns.price
    priced = [i for i in indices if not np.isnan(col[i])] or list(indices)
    priced.sort(key=lambda i: (np.nan_to_num(col[i], nan=np.inf), i))
    shown = []
    for i in priced[:3]:
        o = cat.offer(int(i))
        price = o.hourly_usd(use_spot)
        shown.append(f"{o.instance_type} ({o.vcpus:g} vCPU, {o.memory_gb:g} GiB) in {o.location} at "
                     + (f"${price:.2f}/h" if price is not None else "no price"))
    return "; ".join(shown) or "none"
