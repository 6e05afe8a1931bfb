"""Start, resume and cancel runs: the edge that wires pipeline, plan, state, backends and lineage."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyflow.backends.local import process_alive
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.errors import RunError
from skyflow.runner.engine import PipelineRunner, RunOptions, install_signal_handlers
from skyflow.runner.events import RunEvent
from skyflow.runner.lineage_io import LineageWriter
from skyflow.runner.state import RunStore, skyflow_home
from skyflow.spec.graph import ResolvedPipeline


@dataclass
class RunRequest:
    pipeline: ResolvedPipeline
    target: str
    overrides: dict[str, Any]
    plan: dict[str, Any]
    options: RunOptions = field(default_factory=RunOptions)
    lineage: bool = True
    tracking_uri: str | None = None


def open_lineage(enabled: bool, tracking_uri: str | None, secrets: list[str],
                 warn: Callable[[str], None]) -> tuple[LineageWriter, str | None]:
    """A lineage writer and a description of where lineage goes (None when off)."""
    if not enabled:
        return LineageWriter(warn=warn), None
    from skyflow.errors import LineageError
    from skyflow.lineage.recorder import describe_tracking, open_recorder, resolve_tracking_uri

    home = skyflow_home()
    try:
        recorder = open_recorder(tracking_uri, home, secrets)
    except LineageError as exc:
        warn(f"lineage off: {exc}")
        return LineageWriter(warn=warn), None
    return LineageWriter(recorder=recorder, warn=warn), describe_tracking(resolve_tracking_uri(tracking_uri, home))


def open_backends(options: RunOptions, on_event: Callable[[RunEvent], None]) -> BackendPool:
    """Backends open on first use; the user's config (SSH pools, Kubernetes contexts) comes along."""
    from skyflow.spec.config import load_config

    context = BackendContext(config=load_config(skyflow_home() / "config.yaml"),
                             on_line=lambda stage, line: on_event(RunEvent("log", stage, line)),
                             max_parallel=options.max_parallel)
    return BackendPool(context)


def execute(request: RunRequest, on_event: Callable[[RunEvent], None], warn: Callable[[str], None],
            resume_id: str | None = None) -> tuple[str, str, str | None]:
    """Run (or resume) to the end; returns (run_id, final state, where lineage went)."""
    state = RunStore()
    names = list(request.pipeline.spec.secrets) + [n for s in request.pipeline.stages.values() for n in s.secrets]
    secret_vals = [request.options.env[n] for n in names if request.options.env.get(n)]
    writer, where = open_lineage(request.lineage, request.tracking_uri, secret_vals, warn)
    runner = PipelineRunner(request.pipeline, request.plan, state, open_backends(request.options, on_event),
                            writer, request.options, on_event)
    install_signal_handlers(runner)
    params = request.pipeline.spec.params
    try:
        if resume_id:
            outcome = runner.resume(resume_id, params)
        else:
            outcome = runner.start(request.target, request.overrides, params)
    finally:
        writer.close()
    return runner.run_id, outcome, where


def cancel_run(run_id: str, timeout_s: float = 30.0) -> str:
    """Ask the run's runner to stop (SIGTERM); if none is alive, stop its stages and mark it cancelled."""
    state = RunStore()
    run = state.get_run(run_id)
    if run.state not in ("running",):
        raise RunError(f"run {run_id!r} is {run.state}; only a running run can be cancelled")
    if run.runner_pid and process_alive(run.runner_pid):
        os.kill(run.runner_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if state.get_run(run_id).state != "running":
                return state.get_run(run_id).state
            time.sleep(0.1)
    from skyflow.backends.local import kill_process_groups

    for name, row in run.stages.items():
        if row.state in ("running", "pending"):
            kill_process_groups(row.process_groups)
            state.finish_stage(run_id, name, "cancelled", {}, message="run cancelled")
    state.set_run(run_id, state="cancelled", ended_at=time.time(), runner_pid=None)
    return "cancelled"


def down_run(run_id: str, backends: BackendPool | None = None) -> list[str]:
    """Stop the services a run left serving (local replicas, a Kubernetes Deployment, `sky serve`);
    returns the stages stopped."""
    import json

    from skyflow.backends.local import kill_process_groups
    from skyflow.spec.config import load_config

    state = RunStore()
    run = state.get_run(run_id)
    pool = backends or BackendPool(BackendContext(config=load_config(skyflow_home() / "config.yaml")))
    stopped = []
    for name, row in run.stages.items():
        if not row.endpoint:
            continue
        if row.remote_handle:
            backend = pool.for_infra(row.infra or "local")
            stop = getattr(backend, "stop_service", None)
            if stop is None:
                raise RunError(f"stage {name!r} serves on {row.infra}, whose backend cannot stop services")
            stop(json.loads(row.remote_handle))
            state.set_stage(run_id, name, remote_handle=None, message=f"stopped (was serving at {row.endpoint})")
        elif row.process_groups:
            kill_process_groups(row.process_groups)
            state.set_stage(run_id, name, process_groups=[], message=f"stopped (was serving at {row.endpoint})")
        else:
            continue
        stopped.append(name)
    return stopped


def log_path(run_id: str, stage: str) -> Path:
    run = RunStore().get_run(run_id)
    if stage not in run.stages:
        from skyflow.spec.base import close_matches

        matches = close_matches(stage, list(run.stages))
        raise RunError(f"run {run_id!r} has no stage {stage!r}" + (f"; did you mean {', '.join(matches)}?"
                                                                    if matches else ""))
    row = run.stages[stage]
    if not row.log_path:
        raise RunError(f"stage {stage!r} of run {run_id!r} has no log yet (it is {row.state})")
    return Path(row.log_path)


def runner_alive(run_id: str) -> bool:
    run = RunStore().get_run(run_id)
    return bool(run.runner_pid) and process_alive(run.runner_pid)


__all__ = ["RunRequest", "cancel_run", "execute", "log_path", "runner_alive"]
