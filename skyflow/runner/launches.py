"""One function builds a stage's StageLaunch, for a real attempt and for `--dry-run` alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyflow.artifacts import ArtifactRecord
from skyflow.backends.base import StageLaunch
from skyflow.planner import Placement
from skyflow.runner.environment import stage_environment
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.models import Stage

__all__ = ["build_launch", "planned_stage", "preview_launch", "stage_workdir"]


def planned_stage(stage: Stage, placement: Placement) -> Stage:
    """The stage with the resources of the alternative the plan chose (accelerators, disk, job_recovery)."""
    alternatives = stage.resources.alternatives()
    if len(alternatives) <= 1 and not stage.resources.any_of and not stage.resources.ordered:
        return stage
    chosen = alternatives[placement.alternative] if placement.alternative < len(alternatives) else alternatives[0]
    return stage.model_copy(update={"resources": chosen})


def stage_workdir(pipeline: ResolvedPipeline, name: str) -> Path:
    """Where the stage's commands run: its `workdir:`, else the pipeline file's folder."""
    workdir = pipeline.stages[name].workdir
    if not isinstance(workdir, str):
        return Path(pipeline.base_dir)
    path = Path(workdir).expanduser()
    return path if path.is_absolute() else Path(pipeline.base_dir) / path


def build_launch(pipeline: ResolvedPipeline, name: str, placement: Placement, *, run_id: str, attempt: int,
                 params: Mapping[str, Any], secrets: Mapping[str, str], base_env: Mapping[str, str],
                 inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                 input_refs: Mapping[str, ArtifactRecord], log_path: Path) -> StageLaunch:
    """The launch of one attempt: the planned alternative's spec, its environment, its artifacts."""
    spec = planned_stage(pipeline.stages[name], placement)
    gpus = float(sum(a.count for a in spec.resources.accelerators[:1]))
    env = stage_environment(pipeline, name, run_id=run_id, params=params, inputs=inputs, outputs=outputs,
                            gpus_per_node=gpus, secrets=secrets, base_env=base_env, num_nodes=spec.num_nodes)
    return StageLaunch(run_id=run_id, stage=name, attempt=attempt, spec=spec, placement=placement,
                       workdir=stage_workdir(pipeline, name), env=env, log_path=log_path,
                       secret_values=tuple(secrets.values()), inputs=inputs, outputs=outputs, input_refs=input_refs)


def preview_launch(pipeline: ResolvedPipeline, name: str, placement: Placement) -> StageLaunch:
    """The launch a dry run shows: placeholders for what only a run knows (digests, secret values)."""
    node = Path("/skyflow")
    spec = pipeline.stages[name]
    edges = pipeline.inputs_of(name)
    store = placement.store_uri or "<store>"
    refs = {e.input_name: ArtifactRecord(name=e.input_name, uri=f"<{e.ref} once committed>", digest="<digest>",
                                         size_bytes=0, store_uri=store) for e in edges}
    secrets = {n: f"<{n}>" for n in [*pipeline.spec.secrets, *spec.secrets]}
    inputs = {e.input_name: node / "inputs" / e.input_name for e in edges}
    outputs = {o: node / "outputs" / o for o in spec.outputs}
    return build_launch(pipeline, name, placement, run_id="DRY-RUN", attempt=1, params=dict(pipeline.spec.params),
                        secrets=secrets, base_env={}, inputs=inputs, outputs=outputs, input_refs=refs,
                        log_path=Path("stage.log"))
