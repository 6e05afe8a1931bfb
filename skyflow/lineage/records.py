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
    """One pipeline run as it starts (or resumes). `started_at` is Unix time in seconds.

    `run_key` tells this run apart from another that used the same run id (another machine, another
    SKYFLOW_HOME): a resume sends the same key and adds to the same MLflow run; a new run with a used
    id gets a parent run of its own. `code_digest` is the digest of the stages' code digests;
    `source_name` the pipeline file, `source_type` MLflow's PROJECT (in a git checkout) or LOCAL.
    """

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
    run_key: str = ""
    user: str | None = None
    source_name: str | None = None
    source_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        return cls(**data)


@dataclass(frozen=True)
class DeclaredOutput:
    """What a stage declared about one output for MLflow (the `kind`, `register`, `metrics` and
    `artifacts` of its output spec); paths are relative to the output's folder."""

    name: str
    kind: str = "data"
    register: str | None = None
    metrics: str | None = None
    artifacts: tuple[str, ...] = ()

    @property
    def logs_anything(self) -> bool:
        return self.kind == "model" or self.metrics is not None or bool(self.artifacts)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeclaredOutput:
        return cls(**{**data, "artifacts": tuple(data.get("artifacts", ()))})


@dataclass(frozen=True)
class StageRun:
    """The MLflow run opened for a stage as it starts: where its own MLflow calls should go."""

    tracking_uri: str
    experiment_id: str
    run_id: str


@dataclass(frozen=True)
class StageRecord:
    """One stage of a run once it reached a final state (or was served from cache).

    `placement` holds infra/cloud/region/instance_type/use_spot/...; `resources` the resolved
    resources. Money is in USD, time in seconds, `log_path` a local file or None. `started_at` and
    `ended_at` are Unix times (None: unknown); `mlflow_run_id` is the run opened when the stage
    started (None: none was, and the record makes one). `run_key` is the run's `RunInfo.run_key`.
    `node_mlflow` lists (store URI, key) of each attempt whose remote node could not reach the
    tracking store and carried the stage's own MLflow calls back instead.
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
    started_at: float | None = None
    ended_at: float | None = None
    mlflow_run_id: str | None = None
    declared: list[DeclaredOutput] = field(default_factory=list)
    run_key: str = ""
    record_id: str = ""  # unique per record: a record sent twice updates the run the first send made
    node_mlflow: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageRecord:
        fields = dict(data)
        fields["inputs"] = [ArtifactRecord.from_json(a) for a in fields.get("inputs", [])]
        fields["outputs"] = [ArtifactRecord.from_json(a) for a in fields.get("outputs", [])]
        fields["declared"] = [DeclaredOutput.from_json(d) for d in fields.get("declared", [])]
        fields["node_mlflow"] = [(str(uri), str(key)) for uri, key in fields.get("node_mlflow", [])]
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
