"""The runner's side of lineage: a subscriber to run events that turns them into lineage records.

A lineage failure never stops a run: the writer warns once and carries on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skyflow.artifacts import ArtifactRecord
from skyflow.errors import SkyflowError
from skyflow.lineage.recorder import LineageRecorder, NullRecorder
from skyflow.lineage.records import RunInfo, StageRecord
from skyflow.planner import Plan
from skyflow.runner.events import INPUTS, RUN_STARTED, RunEvent
from skyflow.runner.state import StageRow
from skyflow.spec.export import resources_to_data
from skyflow.spec.graph import ResolvedPipeline
from skyflow.states import StageState

__all__ = ["LineageSubscriber", "LineageWriter", "git_state"]


def git_state(directory: str) -> tuple[str | None, bool]:
    """The commit and dirty flag of the git checkout holding ``directory`` (None outside git)."""
    try:
        commit = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        if commit is None:
            return None, False
        dirty = subprocess.run(["git", "-C", directory, "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


@dataclass
class LineageWriter:
    """Wraps a LineageRecorder; warns once and carries on if the recorder fails."""

    recorder: LineageRecorder = field(default_factory=NullRecorder)
    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr)
    _failed: bool = False
    background_ok: bool = True

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

    def start(self, run_id: str, pipeline: ResolvedPipeline, params: dict[str, Any], plan: Plan | None) -> None:
        from skyflow import __version__

        commit, dirty = git_state(pipeline.base_dir)
        info = RunInfo(run_id=run_id, pipeline=pipeline.name, pipeline_digest=pipeline.digest(), params=params,
                       plan_json=plan.to_json() if plan is not None else None, git_commit=commit, git_dirty=dirty,
                       code_digest=None, skyflow_version=__version__, started_at=time.time())
        self._call(lambda: self.recorder.start_run(info))

    def stage(self, run_id: str, pipeline: ResolvedPipeline, row: StageRow, *,
              inputs: list[ArtifactRecord] | None = None, placement: dict[str, Any] | None = None,
              code_digest: str | None = None) -> None:
        if row.state in (StageState.PENDING, StageState.RUNNING):
            return
        spec = pipeline.stages[row.stage]
        record = StageRecord(
            run_id=run_id, stage=row.stage, state=row.state, attempts=row.attempts,
            placement={"infra": row.infra or "local", "accelerator": row.accelerator, "hourly_usd": row.hourly_usd,
                       "num_nodes": row.num_nodes, "use_spot": spec.resources.use_spot, **(placement or {}),
                       **({"endpoint": row.endpoint} if row.endpoint else {})},
            resources=resources_to_data(spec.resources), duration_s=row.duration_s or 0.0,
            estimated_usd=row.estimated_usd, actual_usd=row.cost_usd, egress_gb=row.egress_gb or 0.0,
            egress_usd=row.egress_usd or 0.0, cache_hit=row.state == StageState.CACHED,
            inputs=list(inputs or []), outputs=list(row.outputs.values()), code_digest=code_digest,
            log_path=row.log_path, cache_key=row.cache_key)
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
    """Subscribes a LineageWriter to a run's events: run start, each finished stage, run end."""

    def __init__(self, writer: LineageWriter, pipeline: ResolvedPipeline) -> None:
        self.writer = writer
        self.pipeline = pipeline
        self.plan: Plan | None = None
        self.inputs: dict[str, list[ArtifactRecord]] = {}
        self.code: dict[str, str] = {}

    def __call__(self, event: RunEvent) -> None:
        if event.kind == RUN_STARTED:
            self.plan = event.plan
            self.writer.start(event.run_id, self.pipeline, dict(event.params), event.plan)
        elif event.kind == INPUTS and event.stage is not None:
            self.inputs[event.stage] = list(event.inputs)
            self.code[event.stage] = event.message
        elif event.row is not None and event.stage is not None:
            self.writer.stage(event.run_id, self.pipeline, event.row, inputs=self.inputs.get(event.stage, []),
                              placement=self._placement(event.stage), code_digest=self.code.get(event.stage))
        elif event.kind.startswith("run-") and event.kind != RUN_STARTED:
            self.writer.end(event.run_id, event.kind.removeprefix("run-"), dict(event.totals))

    def _placement(self, stage: str) -> dict[str, Any]:
        """What the plan chose beyond run state's columns (the chosen alternative's spot setting, ...)."""
        if self.plan is None or stage not in self.plan.stages:
            return {}
        p = self.plan.stages[stage]
        return {"use_spot": p.use_spot, "cloud": p.cloud, "region": p.region, "zone": p.zone,
                "instance_type": p.instance_type}
