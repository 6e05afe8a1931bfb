"""What one run's loop and its stages share: the pipeline, the typed plan, run state, backends, stores."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyflow.artifacts import ArtifactRef, ArtifactStore, open_store
from skyflow.backends.base import Backend, StageHandle
from skyflow.backends.registry import BackendPool
from skyflow.catalog import EgressModel
from skyflow.errors import BackendError
from skyflow.planner import Placement, Plan
from skyflow.runner import artifact_io
from skyflow.runner.events import RunEvent
from skyflow.runner.lineage_io import StageRunOpener
from skyflow.runner.state import RunStore
from skyflow.spec.graph import ResolvedPipeline

__all__ = ["RunContext", "RunOptions", "store_of_placement"]


@dataclass(frozen=True)
class RunOptions:
    run_id: str | None = None
    no_cache: bool = False
    max_parallel: int | None = None
    retry_base_delay_s: float = 1.0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)


def store_of_placement(pipeline: ResolvedPipeline, placement: Placement, home: Path) -> tuple[str, bool, str | None]:
    """(store URI, create if missing, region) for a placement: its attached store, else the pipeline's
    `stores:` for where it runs (or where its cluster lives), else the local store."""
    uri, create, region = artifact_io.store_for_infra(pipeline, placement.infra, home, placement.located_at)
    return placement.store_uri or uri, create, region


@dataclass
class RunContext:
    """Shared by the run loop and every StageWork of one run (stage threads read it; state is in the DB)."""

    pipeline: ResolvedPipeline
    plan: Plan
    state: RunStore
    backends: BackendPool
    options: RunOptions
    emit: Callable[[RunEvent], None]
    home: Path
    secrets: dict[str, str]
    # Opens each stage's MLflow run as it starts (lineage on); its variables reach the stage's process.
    stage_runs: StageRunOpener | None = None
    # The egress prices the plan was made with: what data really moved is priced by the same rules.
    egress: EgressModel | None = None
    run_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    handles: dict[str, StageHandle] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stores: dict[str, ArtifactStore] = field(default_factory=dict)
    # Pipeline inputs committed into a store in this run, by (store URI, input): imported once per
    # location, as the plan priced them, then shared by every stage there.
    _imports: dict[tuple[str, str], ArtifactRef] = field(default_factory=dict)
    _import_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    def local_store(self) -> ArtifactStore:
        uri, create, _ = artifact_io.store_for_infra(self.pipeline, "local", self.home)
        return self._open(uri, create, None)

    def store_for(self, stage: str) -> ArtifactStore:
        """The store of the stage's placement (opened once per run)."""
        return self._open(*store_of_placement(self.pipeline, self.plan.placement(stage), self.home))

    def _open(self, uri: str, create: bool, region: str | None) -> ArtifactStore:
        with self.lock:
            if uri not in self._stores:
                self._stores[uri] = open_store(uri, create=create, region=region)
            return self._stores[uri]

    def import_input(self, store: ArtifactStore, name: str, location: str, stage: str) -> ArtifactRef:
        """Pipeline input ``name`` (at ``location``) committed into ``store``, once per store per run;
        the import is recorded as a transfer of the stage that made it."""
        key = (store.uri, name)
        with self.lock:
            lock = self._import_locks.setdefault(key, threading.Lock())
        with lock:  # a second stage reading the same input here waits for the first import
            if key not in self._imports:
                started = time.monotonic()
                ref = artifact_io.import_external(store, name, location)
                self.state.record_transfer(self.run_id, stage, f"import {name}={ref.digest}", ref.size_bytes,
                                           time.monotonic() - started, self.moved_usd(name, stage, ref.size_bytes))
                self._imports[key] = ref
            return self._imports[key]

    def moved_usd(self, artifact: str, stage: str, size_bytes: int) -> float:
        """What moving ``size_bytes`` of ``artifact`` (a pipeline input or ``stage.output``) to where
        ``stage`` runs cost: the bytes really moved, priced by the egress rule the plan applied to that
        move (its source and target). 0 when the plan moved nothing there (same location, free)."""
        target = self.plan.placement(stage).infra
        charge = next((c for c in self.plan.egress if c.artifact == artifact and c.target == target), None)
        if charge is None or size_bytes <= 0:
            return 0.0
        if self.egress is None:  # no prices at hand: the plan's own rate for that move
            return charge.usd * size_bytes / 1e9 / charge.size_gb if charge.size_gb > 0 else 0.0
        where = {p.infra: p.located_at for p in self.plan.stages.values() if p.located_at}
        return self.egress.estimate_egress_usd(size_bytes / 1e9, where.get(charge.source, charge.source),
                                               where.get(charge.target, charge.target))

    def backend_for(self, stage: str) -> Backend:
        infra = self.plan.placement(stage).infra
        try:
            return self.backends.for_infra(infra)
        except BackendError as exc:
            raise BackendError(f"stage {stage!r} is placed on {infra!r}: {exc.message}", stage=stage,
                               backend=exc.backend) from exc
