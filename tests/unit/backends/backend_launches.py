"""StageLaunches built from the repository's real pipelines and seed tasks, as the runner builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skyflow.backends.base import StageLaunch
from skyflow.errors import SpecError
from skyflow.spec.loader import load_pipeline

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted([*ROOT.glob("tests/fixtures/seed_tasks/*.yaml"), *ROOT.glob("examples/*/pipeline.yaml")])
STORE = "s3://bucket/skyflow"


def stage_launches(path: Path, infra: str, **placement: Any) -> list[StageLaunch]:
    pipeline = load_pipeline(str(path), {})
    out = []
    for name in pipeline.order:
        spec = pipeline.stages[name]
        accs = {a.name: a.count for a in spec.resources.accelerators[:1]}
        inputs = {e.input_name: {"uri": f"{STORE}/manifests/sha256/{'a' * 64}.json", "digest": "a" * 64,
                                 "size_bytes": 3, "store_uri": STORE} for e in pipeline.inputs_of(name)}
        env = {"SKYFLOW_STAGE": name, "SKYFLOW_RUN_ID": "r1", "HF_TOKEN": "s3cr3t-value",
               **{k: v for k, v in spec.envs.items() if v is not None}}
        out.append(StageLaunch(
            run_id="r1", stage=name, attempt=1, setup=spec.setup, run=spec.run or "true", workdir=ROOT,
            env=env, num_nodes=spec.num_nodes, log_path=Path("/nonexistent/stage.log"), timeout_s=spec.timeout,
            secret_values=("s3cr3t-value",), outputs={o: Path("/o") / o for o in spec.outputs},
            input_refs=inputs, store_uri=STORE, stage_spec=spec,
            placement={"infra": infra, "accelerators": accs, "use_spot": spec.resources.use_spot,
                       "num_nodes": spec.num_nodes, **placement}))
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
