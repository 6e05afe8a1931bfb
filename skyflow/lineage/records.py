"""What the runner tells lineage, and what a lineage query returns: frozen records, JSON both ways."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from skyflow.artifacts.record import ArtifactRecord

# Stage states the runner reports, mapped to MLflow run statuses.
STAGE_STATES = ("succeeded", "failed", "cached", "skipped", "cancelled", "running", "pending")
RUN_STATES = ("succeeded", "failed", "cancelled", "running")


@dataclass(frozen=True)
class RunInfo:
    """One pipeline run as it starts. `started_at` is Unix time in seconds."""

    run_id: str
    pipeline: str
    pipeline_digest: str
    params: dict[str, Any]
    plan_json: dict[str, Any] | None
    git_commit: str | None
    git_dirty: bool
    code_digest: str | None
    skyflow_version: str
    started_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        return cls(**data)


@dataclass(frozen=True)
class StageRecord:
    """One stage of a run once it reached a final state (or was served from cache).

    `placement` holds infra/cloud/region/instance_type/use_spot/...; `resources` the resolved
    resources. Money is in USD, time in seconds, `log_path` a local file or None.
    """

    run_id: str
    stage: str
    state: str
    attempts: int
    placement: dict[str, Any]
    resources: dict[str, Any]
    duration_s: float
    estimated_usd: float | None
    actual_usd: float | None
    egress_gb: float
    egress_usd: float
    cache_hit: bool
    inputs: list[ArtifactRecord] = field(default_factory=list)
    outputs: list[ArtifactRecord] = field(default_factory=list)
    code_digest: str | None = None  # digest of the stage's workdir files
    log_path: str | None = None
    cache_key: str | None = None  # what the stage's outputs are cached under

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageRecord:
        fields = dict(data)
        fields["inputs"] = [ArtifactRecord.from_json(a) for a in fields.get("inputs", [])]
        fields["outputs"] = [ArtifactRecord.from_json(a) for a in fields.get("outputs", [])]
        return cls(**fields)


@dataclass(frozen=True)
class Producer:
    """The stage run that wrote an artifact, as recorded in MLflow."""

    run_id: str
    pipeline: str
    stage: str
    state: str
    cache_hit: bool
    code_digest: str | None
    git_commit: str | None
    git_dirty: bool | None
    started_at: float | None
    mlflow_run_id: str
    mlflow_experiment_id: str


@dataclass(frozen=True)
class LineageNode:
    """An artifact, the stage run that produced it (None for raw data), and that run's inputs.

    `note` says why a branch stops early (a cycle, the depth limit); raw data has no note.
    """

    artifact: ArtifactRecord
    producer: Producer | None
    inputs: tuple[LineageNode, ...] = ()
    note: str | None = None

    def walk(self) -> list[LineageNode]:
        """This node and every node below it, depth first."""
        nodes = [self]
        for child in self.inputs:
            nodes.extend(child.walk())
        return nodes
