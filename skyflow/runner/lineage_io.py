"""The runner's side of lineage: turn run state into lineage records; a lineage failure never stops a run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skyflow.errors import SkyflowError
from skyflow.lineage.recorder import LineageRecorder, NullRecorder
from skyflow.lineage.records import ArtifactInfo, RunInfo, StageRecord
from skyflow.runner.state import StageRow
from skyflow.spec.export import resources_to_data
from skyflow.spec.graph import ResolvedPipeline


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
    stage_inputs: dict[str, list[ArtifactInfo]] = field(default_factory=dict)
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

    def start(self, run_id: str, pipeline: ResolvedPipeline, params: dict[str, Any], plan: dict[str, Any]) -> None:
        from skyflow import __version__

        commit, dirty = git_state(pipeline.base_dir)
        info = RunInfo(run_id=run_id, pipeline=pipeline.name, pipeline_digest=pipeline.digest(), params=params,
                       plan_json=plan or None, git_commit=commit, git_dirty=dirty, code_digest=None,
                       skyflow_version=__version__, started_at=time.time())
        self._call(lambda: self.recorder.start_run(info))

    def stage(self, run_id: str, pipeline: ResolvedPipeline, row: StageRow, *,
              inputs: list[ArtifactInfo] | None = None) -> None:
        if row.state in ("pending", "running"):
            return
        spec = pipeline.stages[row.stage]
        record = StageRecord(
            run_id=run_id, stage=row.stage, state=row.state, attempts=row.attempts,
            placement={"infra": row.infra or "local", "accelerator": row.accelerator, "hourly_usd": row.hourly_usd,
                       "num_nodes": row.num_nodes, "use_spot": spec.resources.use_spot,
                       **({"endpoint": row.endpoint} if row.endpoint else {})},
            resources=resources_to_data(spec.resources), duration_s=row.duration_s or 0.0,
            estimated_usd=row.estimated_usd, actual_usd=row.cost_usd, egress_gb=row.egress_gb or 0.0,
            egress_usd=row.egress_usd or 0.0, cache_hit=row.state == "cached",
            inputs=inputs if inputs is not None else self.stage_inputs.get(row.stage, []),
            outputs=[ArtifactInfo(o.name, o.uri, o.digest, o.size_bytes) for o in row.outputs.values()],
            code_digest=row.cache_key, log_path=row.log_path)
        self._call(lambda: self.recorder.record_stage(record))

    def end(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        self._call(lambda: self.recorder.end_run(run_id, state, totals))

    def close(self) -> None:
        """Finish sending; a short run on a local store leaves the sending to a background process."""
        hand_off = getattr(self.recorder, "hand_off", None)
        if hand_off is not None and self.background_ok and hand_off():
            return
        self._call(self.recorder.close)
