"""One stage's work in a run: its inputs, cache key and cache hit, attempts with retries, outputs, services."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from skyflow.artifacts import ArtifactRecord, ArtifactRef, ArtifactStore, DamagedArtifact
from skyflow.backends.base import Backend, ServiceBackend, StageExit, StageLaunch, WriteAheadBackend
from skyflow.backends.masking import mask_secrets
from skyflow.errors import ArtifactError, BackendError, RunError, SkyflowError
from skyflow.planner import Placement
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext
from skyflow.runner.decisions import retry_decision
from skyflow.runner.events import INPUTS, RETRYING, SERVING, RunEvent
from skyflow.runner.launches import build_launch, planned_stage
from skyflow.spec.graph import DataEdge
from skyflow.spec.work import work_key
from skyflow.states import DONE, StageState

__all__ = ["StageOutcome", "StageWork"]

# How often one run may send a stage back to run again because an output of it was found damaged.
HEAL_LIMIT = 2


class _ProducerRerun(RunError):
    """An input was found damaged in the store: its producer runs again, and this stage after it."""


@dataclass
class StageOutcome:
    state: StageState
    message: str = ""
    outputs: dict[str, ArtifactRecord] = field(default_factory=dict)
    endpoint: str | None = None
    service_groups: list[int] = field(default_factory=list)


class StageWork:
    """Runs one stage of one run to an outcome; the run loop calls `run` on a worker thread."""

    def __init__(self, ctx: RunContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.spec = ctx.pipeline.stages[name]
        self.placement = ctx.plan.placement(name)

    def run(self) -> StageOutcome:
        """The stage's outcome; its message never holds a secret's value (a file named after one)."""
        try:
            outcome = self._run()
        except _ProducerRerun as exc:  # back to pending: the run loop starts it again once its producer is done
            outcome = StageOutcome(StageState.PENDING, str(exc))
        except SkyflowError as exc:
            outcome = StageOutcome(StageState.FAILED, str(exc))
        return replace(outcome, message=self._masked(outcome.message))

    def _masked(self, text: str) -> str:
        return mask_secrets(text, list(self.ctx.secrets.values())) if self.ctx.secrets else text

    def _run(self) -> StageOutcome:
        ctx, name, spec, placement = self.ctx, self.name, self.spec, self.placement
        planned = planned_stage(spec, placement)
        ctx.state.set_stage(ctx.run_id, name, infra=placement.infra,
                            accelerator=next(iter(placement.accelerators), None), hourly_usd=placement.hourly_usd,
                            num_nodes=planned.num_nodes, estimated_usd=placement.compute_usd,
                            work_key=work_key(ctx.pipeline.name, name, spec))
        store = ctx.store_for(name)
        input_refs = self._input_refs(store)
        egress_gb, egress_usd = ctx.state.stage_egress(ctx.run_id, name)
        ctx.state.set_stage(ctx.run_id, name, egress_gb=egress_gb, egress_usd=egress_usd)
        code = self.code_digest()
        ctx.emit(RunEvent(INPUTS, name, code, run_id=ctx.run_id, inputs=tuple(
            ArtifactRecord(edge.ref, self._lineage_uri(edge.kind, edge.artifact, input_refs[edge.input_name].uri),
                           input_refs[edge.input_name].digest, input_refs[edge.input_name].size_bytes)
            for edge in ctx.pipeline.inputs_of(name))))
        key = artifact_io.stage_cache_key(spec, params=ctx.params,
                                          input_digests={k: r.digest for k, r in input_refs.items()},
                                          code_digest=code, secret_names=list(ctx.secrets))
        ctx.state.set_stage(ctx.run_id, name, cache_key=key)
        if spec.cache and not ctx.options.no_cache and spec.outputs:
            hit = self._cache_hit(key, store)
            if hit is not None:
                return hit
        ctx.emit(RunEvent(StageState.RUNNING, name, placement.infra, run_id=ctx.run_id))
        # The stage's MLflow run opens now, so that its own MLflow calls land in it (every attempt's).
        mlflow_env = ctx.stage_runs.open_stage_run(ctx.run_id, name, placement.infra) if ctx.stage_runs else {}
        attempt, restarts = ctx.state.get_stage(ctx.run_id, name).attempts, 0
        while True:
            attempt += 1
            outcome, exit_ = self._attempt(attempt, input_refs, store, mlflow_env)
            if outcome.state != StageState.FAILED or exit_ is None:
                break
            decision = retry_decision(planned, attempt, restarts, exit_, ctx.options.retry_base_delay_s)
            if not decision.retry or ctx.cancel_requested.is_set():
                break
            if decision.recovery:
                restarts += 1
            ctx.emit(RunEvent(RETRYING, name, self._masked(f"{outcome.message}; {decision.reason}"), run_id=ctx.run_id))
            if ctx.cancel_requested.wait(decision.delay_s):
                break
        if outcome.state == StageState.SUCCEEDED and spec.cache and spec.outputs:
            artifact_io.cache_record(store, key, outcome.outputs)
        return outcome

    def code_digest(self) -> str:
        """Digest of the files of the stage's `workdir:` (what the cache key and lineage record as its code)."""
        return artifact_io.code_digest(artifact_io.stage_code_dir(self.ctx.pipeline, self.name))

    # -- inputs and cache ----------------------------------------------------------------------
    def _input_refs(self, store: ArtifactStore) -> dict[str, ArtifactRef]:
        """Each input as an artifact in the stage's store (moved there from another store if needed)."""
        ctx, refs = self.ctx, {}
        for edge in ctx.pipeline.inputs_of(self.name):
            if edge.kind == "stage":
                assert edge.producer is not None
                producer = ctx.state.get_stage(ctx.run_id, edge.producer)  # not the whole run: its size grows
                record = producer.outputs.get(edge.artifact)
                if record is None and producer.state not in DONE:
                    # sent back to run again (another consumer found its output damaged): wait for it
                    raise _ProducerRerun(f"{edge.producer!r} is running again; this stage waits for it")
                if record is None:
                    raise RunError(f"stage {edge.producer!r} finished without output {edge.artifact!r}")
                ref = ArtifactRef.open(record, store=store)
                if ref.store.uri != store.uri:
                    try:
                        ref, stats = artifact_io.transfer_artifact(ref, store)
                    except DamagedArtifact as exc:
                        raise self._rerun_producer(edge, record.digest, exc, ref.store) from exc
                    ctx.state.record_transfer(ctx.run_id, self.name, f"{edge.input_name}={ref.digest}", stats.bytes,
                                              stats.seconds, ctx.moved_usd(edge.ref, self.name, stats.bytes))
                refs[edge.input_name] = ref
            else:
                location = artifact_io.external_location(ctx.pipeline, edge.artifact)
                refs[edge.input_name] = ctx.import_input(store, edge.ref, location, self.name)
        return refs

    def _lineage_uri(self, kind: str, artifact: str, committed_uri: str) -> str:
        """Raw data keeps its own URI in lineage; stage outputs their committed one."""
        return committed_uri if kind == "stage" else artifact_io.external_location(self.ctx.pipeline, artifact)

    def _cache_hit(self, key: str, store: ArtifactStore) -> StageOutcome | None:
        """A verified hit in the stage's store, else the same outputs found in another store by an
        earlier run, verified and moved here (moving them is cheaper than recomputing)."""
        ctx, wanted = self.ctx, set(self.spec.outputs)
        found = artifact_io.cache_lookup(store, key)
        if found is not None and set(found[0]) == wanted:
            return StageOutcome(StageState.CACHED, f"verified cache hit: {found[1]}", found[0])
        elsewhere = ctx.state.outputs_for_cache_key(key)
        if not elsewhere or set(elsewhere) != wanted:
            return None
        records, copied, skipped = {}, 0, 0
        for output, record in elsewhere.items():
            if record.store_uri is None or record.store_uri.rstrip("/") == store.uri.rstrip("/"):
                return None
            if not artifact_io.outputs_still_there({output: record}):
                return None
            try:
                moved, stats = artifact_io.transfer_artifact(ArtifactRef.open(record), store)
            except DamagedArtifact:
                return None  # the copy there is damaged (and now quarantined): computing is the way
            ctx.state.record_transfer(ctx.run_id, self.name, f"{output}={moved.digest}", stats.bytes, stats.seconds)
            records[output] = moved.record
            copied, skipped = copied + stats.files_copied, skipped + stats.files_skipped
        artifact_io.cache_record(store, key, records)
        origin = next(iter(elsewhere.values())).store_uri
        return StageOutcome(StageState.CACHED, f"verified cache hit moved from {origin}: manifests re-hashed, {copied} "
                                               f"blobs re-hashed as they were copied, {skipped} already here at their "
                                               "sizes", records)

    # -- attempts ------------------------------------------------------------------------------
    def _attempt(self, attempt: int, input_refs: Mapping[str, ArtifactRef], store: ArtifactStore,
                 mlflow_env: Mapping[str, str]) -> tuple[StageOutcome, StageExit | None]:
        ctx, name = self.ctx, self.name
        attempt_dir = ctx.home / "runs" / ctx.run_id / name / f"attempt-{attempt}"
        if attempt_dir.exists():
            shutil.rmtree(attempt_dir)
        inputs = self._materialize_inputs(attempt_dir / "inputs", input_refs)
        outputs = {o: attempt_dir / "outputs" / o for o in self.spec.outputs}
        for path in outputs.values():
            path.mkdir(parents=True, exist_ok=True)
        log_path = attempt_dir / "stage.log"
        ctx.state.start_attempt(ctx.run_id, name, attempt, str(log_path))
        placement = self.placement if self.placement.store_uri else _with_store(self.placement, store.uri)
        launch = build_launch(ctx.pipeline, name, placement, run_id=ctx.run_id, attempt=attempt, params=ctx.params,
                              secrets=ctx.secrets,
                              base_env={**ctx.options.env, **mlflow_env, **ctx.options.extra_env},
                              inputs=inputs, outputs=outputs,
                              input_refs={k: r.record for k, r in input_refs.items()}, log_path=log_path)
        backend = ctx.backend_for(name)
        if isinstance(backend, WriteAheadBackend) and (planned := backend.planned_remote(launch)):
            ctx.state.set_stage(ctx.run_id, name, remote_handle=json.dumps(dict(planned)))
        if self.spec.service is not None:
            return self._serve(launch, backend), None
        handle = backend.launch(launch)
        with ctx.lock:
            ctx.handles[name] = handle
        if ctx.cancel_requested.is_set():  # a cancel that came while it launched did not see this handle
            handle.cancel()
        remote = handle.remote
        ctx.state.set_stage(ctx.run_id, name, process_groups=handle.process_groups,
                            remote_handle=json.dumps(dict(remote)) if remote else None)
        try:
            exit_ = handle.wait()
        finally:
            with ctx.lock:
                ctx.handles.pop(name, None)
        ctx.state.end_attempt(ctx.run_id, name, attempt, exit_.exit_code, self._masked(exit_.reason))
        if exit_.cancelled or ctx.cancel_requested.is_set():
            return StageOutcome(StageState.CANCELLED, "cancelled"), None
        if not exit_.ok:
            return StageOutcome(StageState.FAILED, f"attempt {attempt}: {exit_.reason} (log: {log_path})"), exit_
        try:
            records = dict(exit_.outputs) if exit_.outputs is not None else artifact_io.commit_outputs(store, outputs)
        except ArtifactError as exc:
            return StageOutcome(StageState.FAILED, str(exc)), None
        shutil.rmtree(attempt_dir / "inputs", ignore_errors=True)
        return StageOutcome(StageState.SUCCEEDED, "", records), exit_

    def _materialize_inputs(self, root: Path, refs: Mapping[str, ArtifactRef]) -> dict[str, Path]:
        """Fetch each input, verified as it is written. An input found damaged in the store heals: a
        stage's output by running its producer again in this run (this stage waits for it), a
        pipeline input by importing it again from where it lives."""
        edges = {edge.input_name: edge for edge in self.ctx.pipeline.inputs_of(self.name)}
        paths = {}
        for input_name, ref in refs.items():
            edge = edges[input_name]
            try:
                path, size, seconds = artifact_io.fetch_input(ref, root / input_name)
            except DamagedArtifact as exc:
                if edge.kind == "stage":
                    raise self._rerun_producer(edge, ref.digest, exc, ref.store) from exc
                path, size, seconds = self._import_again(edge, ref, root / input_name, exc)
            self.ctx.state.record_transfer(self.ctx.run_id, self.name, f"{input_name}={ref.digest}", size, seconds)
            paths[input_name] = path
        return paths

    def _rerun_producer(self, edge: DataEdge, digest: str, exc: DamagedArtifact, where: ArtifactStore) -> RunError:
        """Send the producer of a damaged input back to pending (once, however many consumers find the
        damage: run state decides) and drop its cache entries; this stage then waits for it."""
        ctx, producer = self.ctx, edge.producer
        assert producer is not None
        key = ctx.state.get_stage(ctx.run_id, producer).cache_key
        reason = f"output {edge.artifact!r} ({digest}) was found damaged: {exc.message}; running {producer!r} again"
        result = ctx.state.reset_for_heal(ctx.run_id, producer, edge.artifact, digest, reason, limit=HEAL_LIMIT)
        if result == "exhausted":
            return RunError(f"input {edge.input_name!r} ({edge.ref}) is damaged again after {producer!r} ran again "
                            f"{HEAL_LIMIT} times in this run; is the store failing? {exc}")
        for store in {where.uri: where, ctx.store_for(producer).uri: ctx.store_for(producer)}.values():
            artifact_io.cache_forget(store, key)
        if result == "reset":
            ctx.emit(RunEvent(RETRYING, producer, reason, run_id=ctx.run_id))
        return _ProducerRerun(f"input {edge.input_name!r} ({edge.ref}, {digest}) was damaged in the store; "
                              f"{producer!r} runs again first")

    def _import_again(self, edge: DataEdge, ref: ArtifactRef, dest: Path, exc: DamagedArtifact
                      ) -> tuple[Path, int, float]:
        """A pipeline input damaged in the store: import it again (the bad copy is in quarantine, so its
        bytes are written afresh) and fetch it; a clear failure if the data changed or stays damaged."""
        ctx = self.ctx
        location = artifact_io.external_location(ctx.pipeline, edge.artifact)
        fresh = artifact_io.import_external(ref.store, edge.ref, location)
        ctx.state.record_transfer(ctx.run_id, self.name, f"import {edge.ref}={fresh.digest}", fresh.size_bytes, 0.0)
        if fresh.digest != ref.digest:
            raise ArtifactError(f"its copy in the store was damaged ({exc.message}), and the data changed since this "
                                f"run imported it ({ref.digest} then, {fresh.digest} now); run again to use the new "
                                "data", artifact=edge.input_name, uri=location) from exc
        try:
            return artifact_io.fetch_input(fresh, dest)
        except DamagedArtifact as again:
            raise ArtifactError(f"its copy in the store ({ref.digest}) was damaged, and again right after it was "
                                f"imported again ({again.message}); is the store failing?", artifact=edge.input_name,
                                uri=location) from again

    def _serve(self, launch: StageLaunch, backend: Backend) -> StageOutcome:
        """Start the replicas and wait for the readiness probe; the run goes on while they serve."""
        ctx, name = self.ctx, self.name
        service_spec = self.spec.service
        assert service_spec is not None
        if not isinstance(backend, ServiceBackend):
            raise BackendError(f"the {backend.name} backend cannot run service stages yet", stage=name)
        service = backend.serve(launch)
        remote = service.remote
        ctx.state.set_stage(ctx.run_id, name, process_groups=service.process_groups,
                            remote_handle=json.dumps(dict(remote)) if remote else None)
        problem = service.wait_ready(ctx.cancel_requested, service_spec.readiness_probe.initial_delay_seconds)
        if problem is not None:
            service.stop()
            ctx.state.end_attempt(ctx.run_id, name, launch.attempt, 1, problem)
            state = StageState.CANCELLED if problem == "cancelled" else StageState.FAILED
            return StageOutcome(state, f"service {problem} (log: {launch.log_path})")
        ctx.state.end_attempt(ctx.run_id, name, launch.attempt, 0, "ready")
        ctx.emit(RunEvent(SERVING, name, service.endpoint, run_id=ctx.run_id))
        where = "" if remote is None else f" on {backend.name}"
        return StageOutcome(StageState.SUCCEEDED,
                            f"serving at {service.endpoint}{where}; stop with `skyflow down {ctx.run_id}`",
                            endpoint=service.endpoint, service_groups=service.process_groups)


def _with_store(placement: Placement, store_uri: str) -> Placement:
    return replace(placement, store_uri=store_uri)
