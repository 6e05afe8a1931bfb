"""The runner's side of lineage: a subscriber to run events that turns them into lineage records,
and the hook a stage calls as it starts, which opens its MLflow run and says how to reach it.

A lineage failure never stops a run: the writer warns once and carries on.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skyflow.artifacts import ArtifactRecord
from skyflow.backends.node_mlflow import capture_key
from skyflow.backends.registry import backend_kind
from skyflow.backends.remote_stage import WRAPPER_BACKENDS
from skyflow.errors import SkyflowError
from skyflow.lineage.recorder import LineageRecorder, NullRecorder, describe_tracking, stage_run_environment
from skyflow.lineage.records import DeclaredOutput, RunInfo, StageRecord, StageRun
from skyflow.planner import Plan
from skyflow.runner import artifact_io
from skyflow.runner.events import INPUTS, RUN_STARTED, RunEvent
from skyflow.runner.state import RunStore, StageRow
from skyflow.spec.export import resources_to_data
from skyflow.spec.graph import ResolvedPipeline
from skyflow.states import StageState

__all__ = ["LineageSubscriber", "LineageWriter", "StageRunOpener", "git_state", "pipeline_code_digest"]


class StageRunOpener(Protocol):
    """What a stage calls as it starts to run: the variables that point its own MLflow calls
    (`mlflow.log_metric`, autologging) at the stage's run; empty when it has none."""

    def open_stage_run(self, run_id: str, stage: str, infra: str) -> dict[str, str]: ...


def git_state(directory: str) -> tuple[str | None, bool]:
    """The commit and dirty flag of the git checkout holding ``directory`` (None outside git)."""
    try:
        head = subprocess.run(["git", "-C", directory, "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        # a repository with no commit yet has no HEAD to record (without --verify, rev-parse printed "HEAD")
        commit = head.stdout.strip() if head.returncode == 0 else None
        if not commit:
            return None, False
        dirty = subprocess.run(["git", "-C", directory, "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def pipeline_code_digest(pipeline: ResolvedPipeline) -> str:
    """Digest of the stages' code digests (each the digest of its `workdir:` files, as the cache key has it)."""
    by_dir: dict[Path | None, str] = {}
    stages = {}
    for name in pipeline.order:
        folder = artifact_io.stage_code_dir(pipeline, name)
        if folder not in by_dir:
            by_dir[folder] = artifact_io.code_digest(folder)
        stages[name] = by_dir[folder]
    return "sha256:" + hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return None


def _source_name(pipeline: ResolvedPipeline) -> str:
    """The pipeline file as an absolute path (`file.py:name` for a decorated pipeline)."""
    file, colon, name = pipeline.path.rpartition(":")
    if not (colon and file.endswith(".py") and name.isidentifier()):
        # a colon elsewhere is part of a directory or file name (`/data/runs:2024/p.yaml`)
        file, colon, name = pipeline.path, "", ""
    return str(Path(pipeline.base_dir) / Path(file).name) + colon + name


@dataclass
class LineageWriter:
    """Wraps a LineageRecorder; warns once and carries on if the recorder fails."""

    recorder: LineageRecorder = field(default_factory=NullRecorder)
    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr)
    _failed: bool = False
    # May leave unsent records to a background process at the end (`MlflowRecorder.hand_off`).
    background_ok: bool = False
    _warned_open: bool = False

    @property
    def enabled(self) -> bool:
        return not isinstance(self.recorder, NullRecorder)

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except SkyflowError as exc:
            if not self._failed:
                self.warn(f"lineage not recorded: {exc}")
            self._failed = True

    def start(self, run_id: str, pipeline: ResolvedPipeline, params: dict[str, Any], plan: Plan | None, *,
              run_key: str = "") -> None:
        from skyflow import __version__

        commit, dirty = git_state(pipeline.base_dir)
        info = RunInfo(run_id=run_id, pipeline=pipeline.name, pipeline_digest=pipeline.digest(), params=params,
                       plan_json=plan.to_json() if plan is not None else None, git_commit=commit, git_dirty=dirty,
                       code_digest=pipeline_code_digest(pipeline), skyflow_version=__version__,
                       started_at=time.time(), run_key=run_key, user=_user(), source_name=_source_name(pipeline),
                       source_type="PROJECT" if commit else "LOCAL")
        self._call(lambda: self.recorder.start_run(info))

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        """The stage's MLflow run, opened now; None (and one warning per run) when the store is away."""
        try:
            run = self.recorder.open_stage(run_id, stage)
        except SkyflowError:
            run = None
        if run is None and self.enabled and not self._warned_open:
            self._warned_open = True
            where = describe_tracking(getattr(self.recorder, "tracking_uri", ""))
            error = getattr(self.recorder, "last_error", None)
            self.warn(f"lineage: no MLflow run could be opened for stage {stage!r} on {where}"
                      f"{f' ({error})' if error else ''}; stages run without MLFLOW_RUN_ID and their lineage "
                      "waits in the spool")
        return run

    def stage(self, run_id: str, pipeline: ResolvedPipeline, row: StageRow, *,
              inputs: list[ArtifactRecord] | None = None, placement: dict[str, Any] | None = None,
              code_digest: str | None = None, mlflow_run_id: str | None = None, run_key: str = "",
              node_mlflow: list[tuple[str, str]] | None = None) -> None:
        if row.state in (StageState.PENDING, StageState.RUNNING):
            return
        spec = pipeline.stages[row.stage]
        declared = [DeclaredOutput(name, o.kind, o.registered_model, o.metrics, tuple(o.artifacts))
                    for name, o in spec.outputs.items()]
        ended_at = row.ended_at or time.time()
        started_at = row.started_at or (ended_at - (row.duration_s or 0.0))
        record = StageRecord(
            run_id=run_id, stage=row.stage, state=row.state, attempts=row.attempts,
            placement={"infra": row.infra or "local", "accelerator": row.accelerator, "hourly_usd": row.hourly_usd,
                       "num_nodes": row.num_nodes, "use_spot": spec.resources.use_spot, **(placement or {}),
                       **({"endpoint": row.endpoint} if row.endpoint else {})},
            resources=resources_to_data(spec.resources), duration_s=row.duration_s or 0.0,
            estimated_usd=row.estimated_usd, actual_usd=row.cost_usd, egress_gb=row.egress_gb or 0.0,
            egress_usd=row.egress_usd or 0.0, cache_hit=row.state == StageState.CACHED,
            inputs=list(inputs or []), outputs=list(row.outputs.values()), code_digest=code_digest,
            log_path=row.log_path, cache_key=row.cache_key, started_at=started_at, ended_at=ended_at,
            mlflow_run_id=mlflow_run_id, declared=[d for d in declared if d.logs_anything], run_key=run_key,
            record_id=uuid.uuid4().hex, node_mlflow=list(node_mlflow or []))
        self._call(lambda: self.recorder.record_stage(record))

    def end(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        self._call(lambda: self.recorder.end_run(run_id, state, totals))

    def close(self) -> None:
        """Finish sending; a short run on a local store leaves the sending to a background process."""
        hand_off = getattr(self.recorder, "hand_off", None)
        if hand_off is not None and self.background_ok and hand_off():
            return
        self._call(self.recorder.close)


class LineageSubscriber:
    """Subscribes a LineageWriter to a run's events (run start, each finished stage, run end), and is
    the StageRunOpener the run's stages call as they start.

    ``state`` and ``home`` name the run for MLflow (`RunInfo.run_key`): the same run when resumed
    from this SKYFLOW_HOME, another run when the same id was used elsewhere.
    """

    def __init__(self, writer: LineageWriter, pipeline: ResolvedPipeline, *, state: RunStore | None = None,
                 home: Path | None = None) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.state = state
        self.home = home
        self.plan: Plan | None = None
        self.run_key = ""
        self.inputs: dict[str, list[ArtifactRecord]] = {}
        self.code: dict[str, str] = {}
        self.stage_runs: dict[str, StageRun] = {}
        self.carried_back: dict[str, tuple[str, int]] = {}  # stage -> (its store, first attempt of this run)
        self._warned_remote = False

    def __call__(self, event: RunEvent) -> None:
        if event.kind == RUN_STARTED:
            self.plan = event.plan
            self.run_key = self._run_key(event.run_id)
            self.writer.start(event.run_id, self.pipeline, dict(event.params), event.plan, run_key=self.run_key)
        elif event.kind == INPUTS and event.stage is not None:
            self.inputs[event.stage] = list(event.inputs)
            self.code[event.stage] = event.message
        elif event.row is not None and event.stage is not None:
            if event.row.state in (StageState.PENDING, StageState.RUNNING):
                return  # sent back to run again (its input was damaged): its run stays open for it
            opened = self.stage_runs.pop(event.stage, None)
            store_uri, first = self.carried_back.pop(event.stage, ("", event.row.attempts + 1))
            node_mlflow = [(store_uri, capture_key(event.run_id, event.stage, attempt))
                           for attempt in range(first, event.row.attempts + 1)]
            self.writer.stage(event.run_id, self.pipeline, event.row, inputs=self.inputs.get(event.stage, []),
                              placement=self._placement(event.stage), code_digest=self.code.get(event.stage),
                              mlflow_run_id=opened.run_id if opened else None, run_key=self.run_key,
                              node_mlflow=node_mlflow)
        elif event.kind.startswith("run-") and event.kind != RUN_STARTED:
            self.writer.end(event.run_id, event.kind.removeprefix("run-"), dict(event.totals))

    def open_stage_run(self, run_id: str, stage: str, infra: str) -> dict[str, str]:
        """Open the stage's MLflow run; the variables for its process. A node that runs the stage
        wrapper gets them always (it carries back what it cannot send); another remote node that
        cannot reach this machine's sqlite store gets none (said once)."""
        run = self.stage_runs.get(stage) or self.writer.open_stage(run_id, stage)
        if run is None:
            return {}
        self.stage_runs[stage] = run
        kind = backend_kind(infra)
        remote, carries_back = kind != "local", kind in WRAPPER_BACKENDS
        store_uri = self.plan.stages[stage].store_uri if self.plan is not None and stage in self.plan.stages else None
        if carries_back and store_uri and stage not in self.carried_back:
            self.carried_back[stage] = (store_uri, self._attempts_so_far(run_id, stage) + 1)
        env = stage_run_environment(run, remote=remote, carries_back=carries_back and bool(store_uri))
        if remote and not env and not self._warned_remote:
            self._warned_remote = True
            self.writer.warn(f"lineage: stage {stage!r} runs on {infra}, which cannot reach "
                             f"{describe_tracking(run.tracking_uri)}; its own MLflow calls are not sent to its "
                             "run (set MLFLOW_TRACKING_URI to a tracking server the nodes can reach)")
        return env

    def _attempts_so_far(self, run_id: str, stage: str) -> int:
        """Attempts an earlier process made (a resume): what they carried back went to their own run."""
        if self.state is None:
            return 0
        row = self.state.get_run(run_id).stages.get(stage)
        return row.attempts if row is not None else 0

    def _run_key(self, run_id: str) -> str:
        """This run across its resumes: its SKYFLOW_HOME, id and creation time."""
        if self.state is None or self.home is None:
            return uuid.uuid4().hex
        created_at = self.state.get_run(run_id).created_at
        return hashlib.sha256(f"{self.home.resolve()}\0{run_id}\0{created_at!r}".encode()).hexdigest()[:32]

    def _placement(self, stage: str) -> dict[str, Any]:
        """What the plan chose beyond run state's columns (the chosen alternative's spot setting, ...)."""
        if self.plan is None or stage not in self.plan.stages:
            return {}
        p = self.plan.stages[stage]
        return {"use_spot": p.use_spot, "cloud": p.cloud, "region": p.region, "zone": p.zone,
                "instance_type": p.instance_type}
