"""The Python API's plan and run: the same Session path as `skyflow plan` and `skyflow run`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from skyflow.planner import Plan
from skyflow.runner.context import RunOptions
from skyflow.runner.events import RunEvent
from skyflow.session.planning_options import PlanningOptions
from skyflow.session.session import RunResult, Session
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import load_pipeline, resolve_decorated

if TYPE_CHECKING:
    from skyflow.spec.decorators import Pipeline

__all__ = ["plan", "run"]

PipelineLike = "ResolvedPipeline | Pipeline | str"

def _resolve(pipeline: ResolvedPipeline | Pipeline | str, params: Mapping[str, Any] | None) -> ResolvedPipeline:
    if isinstance(pipeline, ResolvedPipeline):
        if params:
            return load_pipeline(pipeline.path, dict(params))
        return pipeline
    if isinstance(pipeline, str):
        return load_pipeline(pipeline, dict(params or {}))
    return resolve_decorated(pipeline, dict(params or {}))

def plan(pipeline: ResolvedPipeline | Pipeline | str, *, params: Mapping[str, Any] | None = None,
         session: Session | None = None, no_cache: bool = False, **options: Any) -> Plan:
    """Plan a pipeline (a file, ``file.py:function``, a @Pipeline or a loaded one) as `skyflow plan` does.

    ``options`` are PlanningOptions' fields: ``infra="local"``, ``all_clouds=True``, ``deadline=12``...
    """
    session = session or Session()
    return session.plan(_resolve(pipeline, params), PlanningOptions(**options), no_cache=no_cache)

def run(pipeline: ResolvedPipeline | Pipeline | str, *, params: Mapping[str, Any] | None = None,
        session: Session | None = None, run_id: str | None = None, no_cache: bool = False,
        max_parallel: int | None = None, lineage: bool = True, env: Mapping[str, str] | None = None,
        on_event: Callable[[RunEvent], None] | None = None, **options: Any) -> RunResult:
    """Plan and run a pipeline as `skyflow run` does; returns how it ended (a failed run is a state).

    ``params`` override the pipeline's params (as ``--set``); ``options`` are PlanningOptions' fields.
    """
    session = session or Session()
    resolved = _resolve(pipeline, params)
    chosen = session.new_run_id(resolved, run_id)
    planned = session.plan(resolved, PlanningOptions(**options), no_cache=no_cache)
    run_options = RunOptions(run_id=chosen, no_cache=no_cache, max_parallel=max_parallel,
                             env=dict(session.environ), extra_env=dict(env or {}),
                             retry_base_delay_s=float(session.environ.get("SKYFLOW_RETRY_BASE_S", "1")))
    return session.run(resolved, planned, run_id=chosen, target=resolved.path, overrides=dict(params or {}),
                       options=run_options, lineage=lineage, on_event=on_event)
