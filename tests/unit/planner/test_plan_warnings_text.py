"""The plan's warnings word for word: one stage or several, on this machine or a cloud, with or without
an accelerator (what `skyflow plan` prints before anything is launched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from skyflow.planner.candidates import FALLBACK_HOURS, CandidateFinder
from skyflow.planner.plan import Placement
from skyflow.planner.plan_warnings import plan_warnings
from skyflow.spec.loader import load_pipeline

PIPELINE = """\
name: guesses
stages:
  done: {run: echo, estimate: {hours: {A100: 1}}}
  gpu: {run: echo, resources: {accelerators: A100:1}, estimate: {hours: {H100: 3}}}
  cpu: {run: echo, estimate: {hours: {A100: 1}}}
  here1: {run: echo, estimate: {hours: {A100: 1}}}
  here2: {run: echo, estimate: {hours: {A100: 1}}}
  bare1: {run: echo}
  bare2: {run: echo}
"""
H = f"{FALLBACK_HOURS:g}"
NO_FINDER = cast(CandidateFinder, None)  # only a GPU machine for a CPU stage needs the catalog


def place(cloud: str, *, accelerators: dict[str, float] | None = None, cached: bool = False) -> Placement:
    infra = "local" if cloud == "local" else f"{cloud}/us-east-1"
    return Placement(infra=infra, cloud=cloud, region=None if cloud == "local" else "us-east-1", zone=None,
                     instance_type="m", accelerators=accelerators or {}, use_spot=False, num_nodes=1,
                     hourly_usd=1.0, hours=FALLBACK_HOURS, cached=cached, hours_source="fallback")


def warnings(tmp_path: Path, stages: dict[str, Placement]) -> list[str]:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    return plan_warnings(load_pipeline(tmp_path / "p.yaml"), stages, NO_FINDER)


def test_several_stages_share_one_warning_each_kind(tmp_path: Path) -> None:
    got = warnings(tmp_path, {
        "done": place("aws", cached=True),  # a cached copy runs nothing: no warning, and the rest still get theirs
        "gpu": place("aws", accelerators={"A100": 1}), "cpu": place("aws"),
        "here1": place("local"), "here2": place("local"), "bare1": place("aws"), "bare2": place("local"),
    })
    assert got == [
        f"stage 'gpu' is planned on A100, for which neither its estimate nor the run history has hours: priced at "
        f"{H} h, the fallback. Add A100: N to its estimate hours.",
        f"stage 'cpu' is planned on a machine without accelerators, for which neither its estimate nor the run "
        f"history has hours: priced at {H} h, the fallback. Add default: N to its estimate hours.",
        f"stages 'here1', 'here2' run on this machine, for which their estimate has no hours and no earlier run of "
        f"the same work was measured: {H} h each assumed. Add local: N to the estimate hours, or run it once: the "
        "time measured is used after.",
        f"stages 'bare1', 'bare2' have no estimate and no run history: priced at {H} h each, the fallback. Give "
        "estimate: {hours: N} for a real price and critical path.",
    ]


def test_one_stage_of_each_kind_is_named_alone(tmp_path: Path) -> None:
    got = warnings(tmp_path, {"here1": place("local"), "bare1": place("aws")})
    assert got == [
        f"stage 'here1' runs on this machine, for which its estimate has no hours and no earlier run of the same "
        f"work was measured: {H} h assumed. Add local: N to the estimate hours, or run it once: the time measured "
        "is used after.",
        f"stage 'bare1' has no estimate and no run history: priced at {H} h, the fallback. Give estimate: "
        "{hours: N} for a real price and critical path.",
    ]


def test_measured_or_estimated_hours_warn_of_nothing(tmp_path: Path) -> None:
    measured: dict[str, Any] = {"hours_source": "history"}
    stages = {n: Placement(**{**place("aws").__dict__, **measured}) for n in ("gpu", "cpu", "bare1")}
    assert warnings(tmp_path, stages) == []
