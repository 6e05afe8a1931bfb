"""Execute a planned pipeline: ready stages in parallel, cache, retries, outputs, run state, lineage."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyflow.backends.base import Backend, StageExit, StageHandle, StageLaunch
from skyflow.backends.registry import BackendPool
from skyflow.errors import ArtifactError, BackendError, RunError, SkyflowError
from skyflow.lineage.records import ArtifactInfo
from skyflow.runner import artifact_io
from skyflow.runner.decisions import blocked_stages, ready_stages, retry_decision, run_outcome
from skyflow.runner.environment import secret_values, stage_environment
from skyflow.runner.events import RunEvent
from skyflow.runner.lineage_io import LineageWriter
from skyflow.runner.state import OutputRow, RunStore, StageRow, skyflow_home
from skyflow.spec.graph import ResolvedPipeline

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id(pipeline: str) -> str:
    return f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def check_run_id(run_id: str) -> str:
    """A run id names directories and appears in stage scripts: letters, digits, '.', '_', '-' only."""
    if not RUN_ID.fullmatch(run_id):
        raise RunError(f"run id {run_id!r} is not allowed: use up to 128 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit (e.g. --run-id ci-3f2a9c1)")
    return run_id


@dataclass(frozen=True)
class RunOptions:
    run_id: str | None = None
    no_cache: bool = False
    max_parallel: int | None = None
    retry_base_delay_s: float = 1.0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass
class StageOutcome:
    state: str
    message: str = ""
    outputs: dict[str, OutputRow] = field(default_factory=dict)
    endpoint: str | None = None
    service_groups: list[int] = field(default_factory=list)


class PipelineRunner:
    """Runs one pipeline run to its end (or resumes one); decisions come from runner.decisions."""

    def __init__(self, pipeline: ResolvedPipeline, plan: Mapping[str, Any], state: RunStore,
                 backends: BackendPool, lineage: LineageWriter, options: RunOptions,
                 on_event: Callable[[RunEvent], None] = lambda e: None) -> None:
        self.pipeline = pipeline
        self.plan = plan
        self.state = state
        self.backends = backends
        self.lineage = lineage
        self.options = options
        self.on_event = on_event
        self.home = skyflow_home()
        uri, create, _ = artifact_io.store_for_infra(pipeline, "local", self.home)
        self.store = artifact_io.open_store(uri, create=create)
        self._stores: dict[str, artifact_io.ArtifactStore] = {self.store.uri: self.store}
        self.upstream = {s: pipeline.upstream(s) for s in pipeline.order}
        names = list(pipeline.spec.secrets) + [n for st in pipeline.stages.values() for n in st.secrets]
        self.secrets = secret_values(names, options.env)
        self.cancel_requested = threading.Event()
        self._handles: dict[str, StageHandle] = {}
        self._lock = threading.Lock()
        self.run_id = ""

    # -- entry points -------------------------------------------------------------------------
    def start(self, target: str, overrides: Mapping[str, Any], params: Mapping[str, Any]) -> str:
        self.run_id = check_run_id(self.options.run_id or new_run_id(self.pipeline.name))
        self.state.create_run(self.run_id, self.pipeline.name, target, self.pipeline.digest(), dict(overrides),
                              {"no_cache": self.options.no_cache, "lineage": self.lineage.enabled},
                              dict(self.plan) or None,
                              list(self.pipeline.order), self.plan.get("total_usd"))
        self.params = dict(params)
        self.lineage.start(self.run_id, self.pipeline, self.params, dict(self.plan))
        return self._execute()

    def resume(self, run_id: str, params: Mapping[str, Any]) -> str:
        self.run_id = run_id
        self.params = dict(params)
        run = self.state.get_run(run_id)
        for name, row in run.stages.items():
            if row.state == "running":
                self._abandon(row)
            keep = row.state in ("succeeded", "cached") and artifact_io.outputs_still_there(self.store, row.outputs)
            if not keep:
                self.state.set_stage(run_id, name, state="pending", attempts=0, message=None, process_groups=[],
                                     started_at=None, ended_at=None)
        self.state.set_run(run_id, state="running", runner_pid=os.getpid(), ended_at=None)
        self.lineage.start(run_id, self.pipeline, self.params, dict(self.plan))
        return self._execute()

    def _abandon(self, row: StageRow) -> None:
        """Stop what a dead runner's attempt left: local process groups, or a remote Job, task or service."""
        backend = self.backends.for_infra(row.infra or "local")
        abandon = getattr(backend, "abandon", None)
        if row.remote_handle and abandon is not None:
            abandon(json.loads(row.remote_handle))
        backend.kill_process_groups(row.process_groups)

    def cancel(self) -> None:
        self.cancel_requested.set()
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            handle.cancel()

    # -- the loop -----------------------------------------------------------------------------
    def _states(self) -> dict[str, str]:
        return {n: r.state for n, r in self.state.get_run(self.run_id).stages.items()}

    def _execute(self) -> str:
        capacity = self.backends.get("local").capacity().max_parallel
        workers = self.options.max_parallel or capacity
        running: dict[Future[StageOutcome], str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
            while True:
                states = self._states()
                for name in blocked_stages(self.pipeline.order, self.upstream, states):
                    self.state.finish_stage(self.run_id, name, "skipped", {}, message="an upstream stage failed")
                    self.on_event(RunEvent("skipped", name, "an upstream stage failed"))
                    states[name] = "skipped"
                if not self.cancel_requested.is_set():
                    for name in ready_stages(self.pipeline.order, self.upstream, states):
                        if name in running.values() or len(running) >= workers:
                            continue
                        self.state.set_stage(self.run_id, name, state="running")
                        running[pool.submit(self._run_stage_safely, name)] = name
                if not running:
                    break
                try:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:  # Ctrl-C: stop the stages, keep the state, finish cleanly
                    self.cancel()
                    continue
                for future in done:
                    name = running.pop(future)
                    self._finish(name, future.result())
            if self.cancel_requested.is_set():
                for name, st in self._states().items():
                    if st in ("pending", "running"):
                        self.state.finish_stage(self.run_id, name, "cancelled", {}, message="run cancelled")
        return self._close()

    def _finish(self, name: str, outcome: StageOutcome) -> None:
        row = self.state.get_run(self.run_id).stages[name]
        duration = (time.time() - row.started_at) if row.started_at else 0.0
        ran = outcome.state in ("succeeded", "failed")  # compute was used; cached/skipped cost nothing
        cost = (row.hourly_usd or 0.0) * (row.num_nodes or 1) * duration / 3600 if ran else 0.0
        self.state.finish_stage(self.run_id, name, outcome.state, outcome.outputs, message=outcome.message,
                                duration_s=duration, cost_usd=cost, endpoint=outcome.endpoint,
                                process_groups=outcome.service_groups)
        self.on_event(RunEvent(outcome.state, name, outcome.message, cost_usd=cost, duration_s=duration))
        self.lineage.stage(self.run_id, self.pipeline, self.state.get_run(self.run_id).stages[name])

    def _close(self) -> str:
        run = self.state.get_run(self.run_id)
        outcome = run_outcome({n: s.state for n, s in run.stages.items()})
        actual = sum(s.cost_usd or 0.0 for s in run.stages.values())
        self.state.set_run(self.run_id, state=outcome, ended_at=time.time(), actual_usd=actual, runner_pid=None)
        self.lineage.end(self.run_id, outcome, {"actual_usd": actual, "estimated_usd": run.estimated_usd or 0.0})
        self.on_event(RunEvent("run-" + outcome, None, self.run_id, cost_usd=actual))
        return outcome

    # -- one stage ----------------------------------------------------------------------------
    def _run_stage_safely(self, name: str) -> StageOutcome:
        try:
            return self._run_stage(name)
        except SkyflowError as exc:
            return StageOutcome("failed", str(exc))

    def _run_stage(self, name: str) -> StageOutcome:
        spec = self.pipeline.stages[name]
        placement = self.plan.get("stages", {}).get(name, {})
        accelerators = placement.get("accelerators") or {}
        self.state.set_stage(self.run_id, name, infra=placement.get("infra", "local"),
                             accelerator=next(iter(accelerators), None), hourly_usd=placement.get("hourly_usd", 0.0),
                             num_nodes=spec.num_nodes, estimated_usd=placement.get("compute_usd"))
        store = self._store_for(name)
        input_refs = self._input_refs(name, store)
        self.lineage.stage_inputs[name] = [
            ArtifactInfo(edge.ref, self._input_uri(edge.kind, edge.artifact, input_refs[edge.input_name].uri),
                         input_refs[edge.input_name].digest, input_refs[edge.input_name].size_bytes)
            for edge in self.pipeline.inputs_of(name)]
        key = artifact_io.stage_cache_key(spec, params=self.params,
                                          input_digests={k: r.digest for k, r in input_refs.items()},
                                          code_digest=artifact_io.code_digest(self._code_dir(name)),
                                          secret_names=list(self.secrets))
        self.state.set_stage(self.run_id, name, cache_key=key)
        if spec.cache and not self.options.no_cache and spec.outputs:
            hit = self._cache_hit(name, key, store)
            if hit is not None:
                return hit
        self.on_event(RunEvent("running", name, placement.get("infra", "local")))
        attempt, restarts = self.state.get_run(self.run_id).stages[name].attempts, 0
        while True:
            attempt += 1
            outcome, exit_ = self._attempt(name, attempt, input_refs, store)
            if outcome.state != "failed" or exit_ is None:
                break
            decision = retry_decision(spec, attempt, restarts, exit_, self.options.retry_base_delay_s)
            if not decision.retry or self.cancel_requested.is_set():
                break
            if decision.recovery:
                restarts += 1
            self.on_event(RunEvent("retrying", name, f"{outcome.message}; {decision.reason}"))
            if self.cancel_requested.wait(decision.delay_s):
                break
        if outcome.state == "succeeded" and spec.cache and spec.outputs:
            artifact_io.cache_record(store, key, outcome.outputs)
        return outcome

    def _store_for(self, name: str) -> artifact_io.ArtifactStore:
        """The store of the stage's location: `stores:` by cloud/region, then cloud, then local."""
        infra = str(self.plan.get("stages", {}).get(name, {}).get("infra", "local"))
        uri, create, region = artifact_io.store_for_infra(self.pipeline, infra, self.home, self._located_at(infra))
        if uri not in self._stores:
            self._stores[uri] = artifact_io.open_store(uri, create=create, region=region)
        return self._stores[uri]

    def _located_at(self, infra: str) -> str | None:
        """Where a Kubernetes context's cluster lives (its `infra:` in the skyflow config), if set."""
        kind, _, context = infra.partition("/")
        if kind not in ("kubernetes", "k8s"):
            return None
        config = getattr(getattr(self.backends, "context", None), "config", None)
        contexts = getattr(getattr(config, "kubernetes", None), "contexts", None) or {}
        located = getattr(contexts.get(context or "default"), "infra", None)
        return str(located) if located else None

    def _cache_hit(self, name: str, key: str, store: artifact_io.ArtifactStore) -> StageOutcome | None:
        """A verified hit in the stage's store, else the same outputs found in another store by an
        earlier run, verified and moved here (moving them is cheaper than recomputing)."""
        wanted = set(self.pipeline.stages[name].outputs)
        hit = artifact_io.cache_lookup(store, key)
        if hit is not None and set(hit) == wanted:
            return StageOutcome("cached", "verified cache hit", hit)
        elsewhere = self.state.outputs_for_cache_key(key)
        if not elsewhere or set(elsewhere) != wanted:
            return None
        rows = {}
        for output, row in elsewhere.items():
            source = artifact_io.ref_from_row(row, store)
            if source.store.uri == store.uri or not artifact_io.outputs_still_there(source.store, {output: row}):
                return None
            moved, stats = artifact_io.transfer_artifact(source, store)
            self.state.record_transfer(self.run_id, name, f"{output}={moved.digest}", stats.bytes, stats.seconds)
            rows[output] = artifact_io.OutputRow(output, moved.uri, moved.digest, moved.size_bytes)
        artifact_io.cache_record(store, key, rows)
        origin = elsewhere[next(iter(elsewhere))].uri.split("/manifests/")[0]
        return StageOutcome("cached", f"verified cache hit moved from {origin}", rows)

    def _attempt(self, name: str, attempt: int, input_refs: Mapping[str, artifact_io.ArtifactRef],
                 store: artifact_io.ArtifactStore) -> tuple[StageOutcome, StageExit | None]:
        spec = self.pipeline.stages[name]
        attempt_dir = self.home / "runs" / self.run_id / name / f"attempt-{attempt}"
        if attempt_dir.exists():
            shutil.rmtree(attempt_dir)
        inputs = self._materialize_inputs(name, attempt_dir / "inputs", input_refs)
        outputs = {o: attempt_dir / "outputs" / o for o in spec.outputs}
        for path in outputs.values():
            path.mkdir(parents=True, exist_ok=True)
        log_path = attempt_dir / "stage.log"
        self.state.start_attempt(self.run_id, name, attempt, str(log_path))
        gpus = sum(a.count for a in spec.resources.accelerators[:1])
        env = stage_environment(self.pipeline, name, run_id=self.run_id, params=self.params, inputs=inputs,
                                outputs=outputs, gpus_per_node=gpus, secrets=self.secrets,
                                base_env={**self.options.env, **self.options.extra_env}, num_nodes=spec.num_nodes)
        launch = StageLaunch(run_id=self.run_id, stage=name, attempt=attempt, setup=spec.setup,
                             run=spec.run or "true", workdir=self._workdir(name), env=env, num_nodes=spec.num_nodes,
                             log_path=log_path, timeout_s=spec.timeout, gpu_count=gpus,
                             secret_values=tuple(self.secrets.values()), inputs=inputs, outputs=outputs,
                             input_refs={k: {"uri": r.uri, "digest": r.digest, "size_bytes": r.size_bytes,
                                             "store_uri": r.store.uri} for k, r in input_refs.items()},
                             store_uri=store.uri, placement=self.plan.get("stages", {}).get(name, {}),
                             stage_spec=spec)
        backend = self._backend_for(name)
        if spec.service is not None:
            return self._serve(name, launch, backend), None
        handle = backend.launch(launch)
        with self._lock:
            self._handles[name] = handle
        remote = getattr(handle, "remote", None)
        self.state.set_stage(self.run_id, name, process_groups=handle.process_groups,
                             remote_handle=json.dumps(remote) if remote else None)
        try:
            exit_ = handle.wait()
        finally:
            with self._lock:
                self._handles.pop(name, None)
        self.state.end_attempt(self.run_id, name, attempt, exit_.exit_code, exit_.reason)
        if exit_.cancelled or self.cancel_requested.is_set():
            return StageOutcome("cancelled", "cancelled"), None
        if not exit_.ok:
            return StageOutcome("failed", f"attempt {attempt}: {exit_.reason} (log: {log_path})"), exit_
        try:
            rows = (artifact_io.rows_from_backend(exit_.outputs) if exit_.outputs is not None
                    else artifact_io.commit_outputs(store, outputs))
        except ArtifactError as exc:
            return StageOutcome("failed", str(exc)), None
        shutil.rmtree(attempt_dir / "inputs", ignore_errors=True)
        return StageOutcome("succeeded", "", rows), exit_

    def _serve(self, name: str, launch: StageLaunch, backend: Backend) -> StageOutcome:
        """Start the replicas, wait for the probe; the run goes on while the service keeps serving."""
        from skyflow.runner.service import replica_ports, wait_until_ready

        spec = self.pipeline.stages[name]
        assert spec.service is not None
        start = getattr(backend, "launch_service", None)
        if start is None and hasattr(backend, "serve"):
            return self._serve_remote(name, launch, backend)
        if start is None:
            raise BackendError(f"the {backend.name} backend cannot run service stages yet", stage=name)
        ports = replica_ports(spec.service, spec.resources.ports)
        procs = start(launch, ports)
        groups = [p.pid for p in procs]
        self.state.set_stage(self.run_id, name, process_groups=groups)
        urls = [f"http://127.0.0.1:{port}{spec.service.readiness_probe.path}" for port in ports]
        problem = wait_until_ready(urls, spec.service, procs[::2], self.cancel_requested)
        if problem is not None:
            backend.kill_process_groups(groups)
            self.state.end_attempt(self.run_id, name, launch.attempt, 1, problem)
            state = "cancelled" if problem == "cancelled" else "failed"
            return StageOutcome(state, f"service {problem} (log: {launch.log_path})")
        self.state.end_attempt(self.run_id, name, launch.attempt, 0, "ready")
        endpoint = ", ".join(f"http://127.0.0.1:{port}" for port in ports)
        self.on_event(RunEvent("serving", name, endpoint))
        return StageOutcome("succeeded", f"serving at {endpoint}; stop with `skyflow down {self.run_id}`",
                            endpoint=endpoint, service_groups=groups)

    def _serve_remote(self, name: str, launch: StageLaunch, backend: Any) -> StageOutcome:
        """A service on a cluster or cloud: the backend creates it and says when it is ready."""
        spec = self.pipeline.stages[name]
        assert spec.service is not None
        service = backend.serve(launch)
        self.state.set_stage(self.run_id, name, remote_handle=json.dumps(service.remote))
        problem = service.wait_ready(self.cancel_requested, spec.service.readiness_probe.initial_delay_seconds)
        if problem is not None:
            service.stop()
            self.state.end_attempt(self.run_id, name, launch.attempt, 1, problem)
            return StageOutcome("cancelled" if problem == "cancelled" else "failed", f"service {problem}")
        self.state.end_attempt(self.run_id, name, launch.attempt, 0, "ready")
        self.on_event(RunEvent("serving", name, service.endpoint))
        return StageOutcome("succeeded", f"serving at {service.endpoint} on {backend.name}",
                            endpoint=service.endpoint)

    def _input_refs(self, name: str, store: artifact_io.ArtifactStore) -> dict[str, artifact_io.ArtifactRef]:
        """Each input as an artifact in the stage's store (moved there from another store if needed)."""
        refs = {}
        run = self.state.get_run(self.run_id)
        for edge in self.pipeline.inputs_of(name):
            if edge.kind == "stage":
                assert edge.producer is not None
                row = run.stages[edge.producer].outputs.get(edge.artifact)
                if row is None:
                    raise RunError(f"stage {edge.producer!r} finished without output {edge.artifact!r}")
                ref = artifact_io.ref_from_row(row, store)
                if ref.store.uri != store.uri:
                    ref, stats = artifact_io.transfer_artifact(ref, store)
                    self.state.record_transfer(self.run_id, name, f"{edge.input_name}={ref.digest}", stats.bytes,
                                               stats.seconds, self._egress_usd(edge.ref, name))
                refs[edge.input_name] = ref
            else:
                location = artifact_io.external_location(self.pipeline, edge.artifact)
                refs[edge.input_name] = artifact_io.import_external(store, edge.ref, location)
        return refs

    def _egress_usd(self, artifact: str, stage: str) -> float:
        """What the plan priced moving ``artifact`` to ``stage`` (0 when it priced nothing)."""
        return sum(float(e.get("usd", 0.0)) for e in self.plan.get("egress", [])
                   if e.get("artifact") == artifact and e.get("to_stage") == stage)

    def _input_uri(self, kind: str, artifact: str, committed_uri: str) -> str:
        """Raw data keeps its own URI in lineage; stage outputs their committed one."""
        return committed_uri if kind == "stage" else artifact_io.external_location(self.pipeline, artifact)

    def _materialize_inputs(self, name: str, root: Path,
                            refs: Mapping[str, artifact_io.ArtifactRef]) -> dict[str, Path]:
        paths = {}
        for input_name, ref in refs.items():
            path, size, seconds = artifact_io.fetch_input(ref, root / input_name)
            self.state.record_transfer(self.run_id, name, f"{input_name}={ref.digest}", size, seconds)
            paths[input_name] = path
        return paths

    def _workdir(self, name: str) -> Path:
        workdir = self.pipeline.stages[name].workdir
        if not isinstance(workdir, str):
            return Path(self.pipeline.base_dir)
        path = Path(workdir).expanduser()
        return path if path.is_absolute() else Path(self.pipeline.base_dir) / path

    def _code_dir(self, name: str) -> Path | None:
        return artifact_io.stage_code_dir(self.pipeline, name)

    def _backend_for(self, name: str) -> Backend:
        infra = str(self.plan.get("stages", {}).get(name, {}).get("infra", "local"))
        try:
            return self.backends.for_infra(infra)
        except BackendError as exc:
            raise BackendError(f"stage {name!r} is placed on {infra!r}: {exc.message}", stage=name,
                               backend=exc.backend) from exc


def install_signal_handlers(runner: PipelineRunner) -> None:
    """SIGTERM (skyflow cancel) cancels cleanly, like Ctrl-C."""
    def handler(signum: int, frame: Any) -> None:
        runner.cancel()

    signal.signal(signal.SIGTERM, handler)
