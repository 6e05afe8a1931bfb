"""Tiny price tables and pipelines built in memory, so planner tests assert on Plan objects."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import numpy as np
import pytest

from skyflow.catalog import EgressModel, EgressRule, Offer, PriceCatalog
from skyflow.errors import PlanningError
from skyflow.planner import Policy, plan_pipeline
from skyflow.planner.core import _problem
from skyflow.planner.problem import Problem
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import resolve_data
from skyflow.spec.source import parse_yaml


class Hardware(TypedDict, total=False):
    """What ``offer(...)`` takes about a machine, for ``**hardware`` shared by several offers."""

    acc: str
    count: float
    cpus: float
    mem: float


def offer(location: str, instance: str, price: float | None, spot: float | None = None, *,
          acc: str | None = None, count: float = 0, cpus: float = 8, mem: float = 32, zone: str | None = None,
          arch: str | None = None) -> Offer:
    """One offer; the zone defaults to REGION-a and the architecture to what the instance name says."""
    cloud, region = location.split("/")
    return Offer(cloud, region, zone or f"{region}-a", instance, acc, count if acc else 0.0, cpus, mem, price, spot,
                 arch=arch)


def catalog(*offers: Offer) -> PriceCatalog:
    return PriceCatalog.from_offers(offers)


def pipeline(stages: dict[str, Any], inputs: dict[str, Any] | None = None, name: str = "p") -> ResolvedPipeline:
    body: dict[str, Any] = {"name": name, "stages": {}}
    for stage, spec in stages.items():
        body["stages"][stage] = {"run": "true", **spec}
    if inputs:
        body["inputs"] = inputs
    data, smap = parse_yaml(json.dumps(body), "p.yaml")
    return resolve_data(data, smap, "p.yaml", ".")


def rules(*items: tuple[str, str, float]) -> EgressModel:
    return EgressModel(rules=tuple(EgressRule(a, b, r) for a, b, r in items))


def problem_with_every_option(p: ResolvedPipeline, cat: PriceCatalog, egress: EgressModel,
                              policy: Policy) -> tuple[Problem, list[np.ndarray]]:
    """The planner's problem for ``p`` and, per stage, every one of its options kept."""
    problem, _ = _problem(p, cat, egress, policy)
    return problem, [np.arange(len(options)) for options in problem.options]


def infras(problem: Problem, choice: list[int]) -> list[str]:
    """Where each stage runs in ``choice`` (an option index per stage)."""
    return [problem.options[s][k].infra for s, k in enumerate(choice)]


def position(problem: Problem, s: int, infra: str) -> int:
    """The index of stage ``s``'s option at ``infra``."""
    return next(k for k, o in enumerate(problem.options[s]) if o.infra == infra)


def refusal(resources: dict[str, Any], cat: PriceCatalog, policy: Policy) -> str:
    """The one ``asked for ...`` line of the no-place error of a stage ``s`` with these resources."""
    with pytest.raises(PlanningError) as info:
        plan_pipeline(pipeline({"s": {"resources": resources}}), cat, rules(), policy)
    assert info.value.stage == "s"
    head, line = str(info.value).split("\n")
    assert head == "stage 's': no place to run it."
    return line
