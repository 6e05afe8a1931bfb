"""Why there is no plan: what removed a stage's offers, or which deadline or budget no plan meets."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from skyflow.catalog import Offer, PriceCatalog
from skyflow.catalog.families import X86_64
from skyflow.errors import PlanningError
from skyflow.matching import close_matches
from skyflow.planner.budget import Budget
from skyflow.planner.milp import InfeasibleError
from skyflow.planner.policy import Policy, infra_cloud_region
from skyflow.planner.pools import pools_reason
from skyflow.planner.problem import Evaluation, Problem, evaluate

if TYPE_CHECKING:
    from skyflow.planner.candidates import CandidateFinder, Request


def no_candidates_error(name: str, requests: list[Request], finder: CandidateFinder, num_nodes: int) -> PlanningError:
    """Say what the stage asked for, the nearest offers, and which constraint removed them."""
    lines = [f"stage {name!r}: no place to run it."]
    for req in requests:
        pools = pools_reason(req, num_nodes, finder.policy)
        pinned = req.cloud in ("ssh", "kubernetes", "ray")
        why = pools if pinned else "; ".join(r for r in (_why_none(req, finder), pools) if r)
        lines.append(f"  asked for {req.describe()}: {why}")
    return PlanningError("\n".join(lines), stage=name)


def _why_none(req: Request, finder: CandidateFinder) -> str:
    cat, c, policy = finder.catalog, finder.catalog.columns, finder.policy
    hardware = finder.hardware_mask(req)
    if not hardware.any():
        return _nearest_hardware(req, finder)
    arch = finder.arch(req, hardware)
    steps = [
        (f"the CPU architecture ({_arch_reason(req, arch)})", finder.arch_mask(req, hardware), ""),
        ("leaving out burstable CPUs (name the instance_type to use one)", finder.sustained_mask(req), ""),
        ("the infra/cloud/region/zone pin", finder.pin_mask(req), "pin"),
        ("no spot price" if req.use_spot else "no on-demand price", ~np.isnan(c.spot if req.use_spot else c.price), ""),
        (_clouds_reason(policy, cat.clouds), finder.cloud_ok[c.cloud], ""),
        ("the region filters (--infra, allowed/blocked regions)", finder.region_ok[c.region], "filters"),
    ]
    mask = hardware
    for reason, step, kind in steps:
        kept = mask & step
        if not kept.any():
            hint, nearest = "", _describe_offers(cat, np.nonzero(mask)[0], req.use_spot)
            if kind == "pin":
                hint, nearest = _pin_hint(req, cat, mask), _nearest_to_pin(req, cat, mask)
            elif kind == "filters":
                hint = _filters_hint(policy, cat)
            count = _count_offers(cat, mask)
            offers, them = ("1 offer matches", "it") if count == 1 else (f"{count} offers match", "them all")
            return (f"{offers} the hardware but {reason} removed {them}"
                    f"{f' ({hint})' if hint else ''}; nearest: {nearest}")
        mask = kept
    return "no offer is left"


def _arch_reason(req: Request, arch: str) -> str:
    if req.cpu_arch:
        return f"cpu_arch {arch}"
    return f"{X86_64} unless cpu_arch says otherwise; set cpu_arch: arm64 or any to use Arm machines"


def _count_offers(cat: PriceCatalog, mask: np.ndarray) -> int:
    """Offers counted per instance and region, as a user sees them (not per zone)."""
    c = cat.columns
    return len({(int(r), int(i), int(a), float(n)) for r, i, a, n in zip(
        c.region[mask], c.instance[mask], c.acc_name[mask], c.acc_count[mask], strict=True)})


def _regions_by_cloud(cat: PriceCatalog) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for loc in cat.location_names:
        cloud, _, region = loc.partition("/")
        out.setdefault(cloud, []).append(region)
    return out


def _pin_hint(req: Request, cat: PriceCatalog, hardware: np.ndarray) -> str:
    """What is wrong with the pin: a cloud without offers, a region typo or one of another cloud, a zone."""
    regions = _regions_by_cloud(cat)
    if req.cloud and req.cloud not in regions:
        return f"the catalog has no {req.cloud} offers (clouds: {', '.join(sorted(regions))})"
    if req.region:
        wrong = _region_hint(req.cloud, req.region, regions)
        if wrong:
            return wrong
    if req.zone:
        c = cat.columns
        region_ok = np.array([_covers(req, loc) for loc in cat.location_names])[c.region]
        all_zones = sorted({cat.zone_names[z] for z in np.unique(c.zone[region_ok]) if z})
        if req.zone not in all_zones:
            close = close_matches(req.zone, all_zones)
            return (f"no zone {req.zone!r} in {'/'.join(p for p in (req.cloud, req.region) if p) or 'the catalog'}"
                    + (f"; did you mean {', '.join(close)}?" if close else ""))
        here = sorted({cat.zone_names[z] for z in np.unique(c.zone[region_ok & hardware]) if z})
        if here:
            return f"it is offered in zones {', '.join(here)}, not {req.zone}"
    return ""


def _region_hint(cloud: str | None, region: str, regions: dict[str, list[str]]) -> str:
    """Empty when ``cloud`` has ``region``; else that it has none, whose region it is, close names."""
    own = regions.get(cloud, []) if cloud else [r for rs in regions.values() for r in rs]
    if region in own:
        return ""
    others = sorted(cl for cl, rs in regions.items() if region in rs and cl != cloud)
    close = close_matches(region, own)
    text = (f"{region!r} is a region of {', '.join(others)}, not {cloud}" if others
            else f"{cloud or 'the catalog'} has no region {region!r}")
    return text + (f"; did you mean {', '.join(close)}?" if close else "")


def _covers(req: Request, location: str) -> bool:
    cloud, _, region = location.partition("/")
    return req.cloud in (None, cloud) and req.region in (None, region)


def _nearest_to_pin(req: Request, cat: PriceCatalog, mask: np.ndarray) -> str:
    """The cheapest offers of ``mask`` in the pinned cloud (and region, when it has some): the
    nearest respect the pin as far as they can."""
    if not req.cloud:
        return _describe_offers(cat, np.nonzero(mask)[0], req.use_spot)
    c = cat.columns
    inside = mask & np.array([n == req.cloud for n in cat.cloud_names])[c.cloud]
    if not inside.any():
        return f"none in {req.cloud}; elsewhere " + _describe_offers(cat, np.nonzero(mask)[0], req.use_spot)
    if req.region:
        in_region = inside & np.array([_covers(req, loc) for loc in cat.location_names])[c.region]
        inside = in_region if in_region.any() else inside
    return _describe_offers(cat, np.nonzero(inside)[0], req.use_spot)


def _filters_hint(policy: Policy, cat: PriceCatalog) -> str:
    """Did-you-mean for the --infra and --allow-regions entries that name no region of the catalog."""
    regions = _regions_by_cloud(cat)
    hints = []
    for entry in policy.infra or ():
        cloud, region = infra_cloud_region(entry)
        if region and region != "*" and cloud not in ("local", "ssh", "kubernetes", "ray"):
            hints.append(_region_hint(cloud, region, regions))
    for entry in policy.allowed_regions or ():
        cloud, sep, region = entry.partition("/")
        hints.append(_region_hint(cloud, region, regions) if sep else _region_hint(None, entry, regions))
    return "; ".join(h for h in hints if h)


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
            return (f"no {name} in the catalog" + (f"; did you mean {', '.join(names)}?" if names else ".")
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
    if not len(c.vcpus):
        return "the catalog has no offers"
    largest = np.argsort(-c.vcpus, kind="stable")
    return f"no offer has {_sizes(req)}; largest: " + _describe_offers(cat, largest, False, by_size=True)


def _sizes(req: Request) -> str:
    """The cpus and memory asked for (what is left to refuse an offer once its accelerator and type match)."""
    return " and ".join(p for p in (f"cpus {req.cpus}" if req.cpus else "",
                                    f"memory {req.memory}" if req.memory else "") if p)


def _describe_offers(cat: PriceCatalog, indices: np.ndarray, use_spot: bool, by_size: bool = False) -> str:
    """Up to three offers, cheapest first (or in the given order), one per instance and region."""
    col = cat.columns.spot if use_spot else cat.columns.price
    chosen = [int(i) for i in indices]
    if not by_size:
        priced = [i for i in chosen if not np.isnan(col[i])] or chosen
        chosen = sorted(priced, key=lambda i: (np.nan_to_num(col[i], nan=np.inf), i))
    shown: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i in chosen:
        o = cat.offer(i)
        if (o.instance_type, o.location) in seen:
            continue
        seen.add((o.instance_type, o.location))
        shown.append(f"{o.instance_type} ({o.vcpus:g} vCPU, {o.memory_gb:g} GiB) in {o.location} at "
                     + _price_text(o, use_spot))
        if len(shown) == 3:
            break
    return "; ".join(shown) or "none"


def _price_text(offer: Offer, use_spot: bool) -> str:
    """The price asked for, or the other one and that it is the only one (an offer with no spot price)."""
    price = offer.hourly_usd(use_spot)
    if price is not None:
        return f"${price:.2f}/h"
    other = offer.hourly_usd(not use_spot)
    return f"${other:.2f}/h {'on demand' if use_spot else 'spot'} only" if other is not None else "no price"


def infeasible_error(problem: Problem, keep: list[np.ndarray], policy: Policy, budget: Budget) -> InfeasibleError:
    """Name the constraint no plan meets, with the fastest and cheapest plans there are.

    Explaining never runs unbounded: each search gets a part of ``budget`` (what is left of the plan's
    time limit) and starts from a plan it can always fall back on; a figure it could not prove is given as
    "at most" (the best plan found) or "at least" (the proven bound), never as a wrong claim.
    """
    deadline, budget_usd = policy.deadline_h, policy.max_cost_usd
    fastest = _best(problem, keep, "time", budget.part(1 / 4))
    cheapest = _best(problem, keep, "cost", budget.part(1 / 3))
    fast = (f"the fastest plan takes {_hours_text(fastest)} and costs ${fastest.plan.total_usd:,.2f}")
    cheap = (f"the cheapest plan costs {_usd_text(cheapest)} and takes {cheapest.plan.hours:.2f} h")
    parts = []
    if deadline is not None and fastest.least_hours > deadline + 1e-9:
        parts.append(f"no plan finishes within the deadline of {deadline:g} h: {fast}")
    if budget_usd is not None and cheapest.least_usd > budget_usd + 1e-9:
        parts.append(f"no plan costs at most the budget of ${budget_usd:,.2f}: {cheap}")
    if not parts and deadline is not None and budget_usd is not None:
        try:
            in_time = _best(problem, keep, "cost", budget.part(1 / 2), deadline_h=deadline)
            in_budget = _best(problem, keep, "time", budget.part(1.0), max_cost_usd=budget_usd)
            parts.append(f"no plan meets both the deadline of {deadline:g} h and the budget of ${budget_usd:,.2f}: "
                         f"within the deadline the cheapest plan costs {_usd_text(in_time)}; within the "
                         f"budget the fastest plan takes {_hours_text(in_budget)}")
        except PlanningError:  # the time limit stopped a search before it found any plan
            parts.append(f"no plan meets both the deadline of {deadline:g} h and the budget of "
                         f"${budget_usd:,.2f}: {fast}; {cheap}")
    if not parts:  # not reached when the program is right; say what was asked at least
        parts.append(f"{fast}; {cheap}")
    return InfeasibleError("no plan meets the constraints: " + "; ".join(parts)
                           + ". Raise the deadline or budget, or allow more clouds and regions.")


@dataclass(frozen=True)
class _Found:
    """The best plan a bounded search found, and what was proven: no plan is cheaper than
    ``least_usd`` or faster than ``least_hours`` (equal to the plan's when proven optimal)."""

    plan: Evaluation
    least_usd: float
    least_hours: float
    proven: bool


def _usd_text(found: _Found) -> str:
    usd = found.plan.total_usd
    return f"${usd:,.2f}" if found.proven else f"at most ${usd:,.2f} (at least ${found.least_usd:,.2f})"


def _hours_text(found: _Found) -> str:
    hours = found.plan.hours
    return f"{hours:.2f} h" if found.proven else f"at most {hours:.2f} h (at least {found.least_hours:.2f} h)"


def _best(problem: Problem, keep: list[np.ndarray], minimize: str, budget: Budget, deadline_h: float | None = None,
          max_cost_usd: float | None = None) -> _Found:
    from skyflow.planner.solve import solve_milp_bounded

    start = None
    if deadline_h is None and max_cost_usd is None:  # every plan is feasible: begin from the quickest or cheapest
        values = problem.opt_hours if minimize == "time" else problem.opt_compute
        start = [int(opts[np.argmin(values[s][opts])]) for s, opts in enumerate(keep)]
    found = solve_milp_bounded(problem, keep, with_time=True, deadline_h=deadline_h, max_cost_usd=max_cost_usd,
                               minimize=minimize, start=start, budget=budget)
    plan = evaluate(problem, found.choice)
    least_usd = plan.total_usd if found.cost_bound is None or minimize == "time" else found.cost_bound
    least_hours = plan.hours if found.hours_bound is None or minimize == "cost" else found.hours_bound
    proven = (found.hours_bound is None) if minimize == "time" else (found.cost_bound is None)
    return _Found(plan, least_usd, least_hours, proven)
