"""StageLaunches built from the repository's real pipelines and seed tasks, as the runner builds them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from skyflow.artifacts import ArtifactRecord
from skyflow.backends.base import StageLaunch
from skyflow.errors import SpecError
from skyflow.planner import forced_plan
from skyflow.runner.launches import build_launch
from skyflow.spec.loader import load_pipeline

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted([*ROOT.glob("tests/fixtures/seed_tasks/*.yaml"), *ROOT.glob("examples/*/pipeline.yaml")])
STORE = "s3://bucket/skyflow"


def stage_launches(path: Path, infra: str, **placement: Any) -> list[StageLaunch]:
    """Each stage's launch as the runner builds it, placed on its first resource alternative at ``infra``."""
    pipeline = load_pipeline(str(path), {})
    plan = forced_plan(pipeline, infra)
    out = []
    for name in pipeline.order:
        spec = pipeline.stages[name]
        where = replace(plan.stages[name], store_uri=STORE, **placement)
        inputs = {e.input_name: ArtifactRecord(e.input_name, f"{STORE}/manifests/sha256/{'a' * 64}.json", "a" * 64, 3,
                                               STORE) for e in pipeline.inputs_of(name)}
        launch = build_launch(pipeline, name, where, run_id="r1", attempt=1, params={},
                              secrets={"HF_TOKEN": "s3cr3t-value"}, base_env={},
                              inputs={}, outputs={o: Path("/o") / o for o in spec.outputs}, input_refs=inputs,
                              log_path=Path("/nonexistent/stage.log"))
        out.append(replace(launch, workdir=ROOT))
    return out


def all_launches(infra: str, **placement: Any) -> list[StageLaunch]:
    """Launches for every source skyflow accepts (a few seed tasks are rejected by the spec on purpose)."""
    out = []
    for path in SOURCES:
        try:
            out += stage_launches(path, infra, **placement)
        except SpecError:
            continue
    return out
