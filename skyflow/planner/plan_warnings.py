"""What a user should know about a plan before launching it: GPU boxes for CPU stages, guessed hours."""

from __future__ import annotations

from skyflow.planner.candidates import FALLBACK_HOURS, CandidateFinder, Request
from skyflow.planner.plan import Placement
from skyflow.planner.policy import LOCAL
from skyflow.spec.graph import ResolvedPipeline

_OWN_MACHINES = (LOCAL, "ssh", "kubernetes", "ray")


def plan_warnings(pipeline: ResolvedPipeline, stages: dict[str, Placement], finder: CandidateFinder) -> list[str]:
    """Warnings about the chosen placements (cached copies run nothing and get none)."""
    on_gpus: dict[str, list[str]] = {}  # warning text (without the stage names) -> stages
    bare: list[str] = []  # stages without any estimate or history
    here: list[str] = []  # stages on this machine, whose estimate has no hours for it
    out: list[str] = []
    texts: dict[tuple[Request, str, str, float], str] = {}  # stages asking alike share one search of offers
    for name, placed in stages.items():
        if placed.cached:
            continue
        stage = pipeline.stages[name]
        req = Request.of(stage.resources.alternatives()[placed.alternative])
        if not req.accelerator and placed.accelerators and placed.cloud not in _OWN_MACHINES:
            key = (req, placed.infra, placed.instance_type, placed.hourly_usd)
            if key not in texts:
                texts[key] = _gpu_for_cpu_stage(req, placed, finder)
            on_gpus.setdefault(texts[key], []).append(name)
        if placed.hours_source != "fallback":
            continue
        accelerator = req.accelerator[0] if req.accelerator else None
        if not stage.estimate.hours:
            bare.append(name)
        elif placed.cloud == LOCAL:
            here.append(name)
        else:
            out.append(f"stage {name!r} is planned on {accelerator or 'a machine without accelerators'}, for "
                       f"which neither its estimate nor the run history has hours: priced at {FALLBACK_HOURS:g} h, "
                       f"the fallback. Add {accelerator or 'default'}: N to its estimate hours.")
    out = [f"{_stages(names)} {'asks' if len(names) == 1 else 'ask'} for no accelerator but "
           f"{'is' if len(names) == 1 else 'are'} planned on {text}" for text, names in on_gpus.items()] + out
    if here:
        one = len(here) == 1
        out.append(f"{_stages(here)} {'runs' if one else 'run'} on this machine, for which {'its' if one else 'their'} "
                   f"estimate has no hours and no earlier run of the same work was measured: "
                   f"{FALLBACK_HOURS:g} h{'' if one else ' each'} assumed. Add local: N to the estimate hours, "
                   "or run it once: the time measured is used after.")
    if bare:
        one = len(bare) == 1
        out.append(f"{_stages(bare)} {'has' if one else 'have'} no estimate and no run history: priced at "
                   f"{FALLBACK_HOURS:g} h{'' if one else ' each'}, the fallback. Give estimate: {{hours: N}} for a "
                   "real price and critical path.")
    return out


def _stages(names: list[str]) -> str:
    return ("stage " if len(names) == 1 else "stages ") + ", ".join(repr(n) for n in names)


def _gpu_for_cpu_stage(req: Request, placed: Placement, finder: CandidateFinder) -> str:
    accelerators = ", ".join(f"{n}:{c:g}" for n, c in placed.accelerators.items())
    text = (f"{placed.instance_type} ({accelerators}) at ${placed.hourly_usd:,.2f}/h in {placed.infra}, the "
            f"cheapest machine there with {req.describe()}")
    for index, hourly in finder.offers(req, with_accelerators=False):
        offer = finder.catalog.offer(index)
        if offer.location == placed.infra:
            return text + (f"; the cheapest without accelerators there is {offer.instance_type} at "
                           f"${hourly:,.2f}/h. Name an instance_type to choose the machine.")
    return text + "; none without accelerators has that there. Name an instance_type to choose the machine."
