"""skyflow: multi-stage LLMOps pipelines, each stage on the cheapest place that fits it.

The public API is imported lazily so that ``import skyflow`` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

# `typing` costs 3 ms to import, a tenth of a command that a daemon answers; type checkers take any
# constant named TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "skyflow.spec.decorators",
    "stage": "skyflow.spec.decorators",
    "Input": "skyflow.spec.decorators",
    "Resources": "skyflow.spec.decorators",
    "load_pipeline": "skyflow.spec.loader",
    "SkyflowError": "skyflow.errors",
    "SpecError": "skyflow.errors",
    "Plan": "skyflow.planner",
    "Placement": "skyflow.planner",
    "Session": "skyflow.session",
    "PlanningOptions": "skyflow.session",
    "RunOptions": "skyflow.session",
    "RunResult": "skyflow.session",
    "plan": "skyflow.session.api",
    "run": "skyflow.session.api",
}

__all__ = ["Input", "Pipeline", "Placement", "Plan", "PlanningOptions", "Resources", "RunOptions", "RunResult",
           "Session", "SkyflowError", "SpecError", "__version__", "load_pipeline", "plan", "run", "stage"]

if TYPE_CHECKING:
    from skyflow.errors import SkyflowError, SpecError
    from skyflow.planner import Placement, Plan
    from skyflow.session import PlanningOptions, RunOptions, RunResult, Session
    from skyflow.session.api import plan, run
    from skyflow.spec.decorators import Input, Pipeline, Resources, stage
    from skyflow.spec.loader import load_pipeline


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'skyflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
