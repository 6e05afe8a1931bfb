"""The edge between users (the CLI, Python) and the pure core: discover, plan, run, resume, cancel, stop.

Names are imported on first use: a command that only reads run state, or declares the planning flags,
does not load the planner and the backends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "RunOptions": "skyflow.runner.context",
    "PlanningOptions": "skyflow.session.planning_options",
    "detect_enabled_clouds": "skyflow.session.discovery",
    "pools_from_config": "skyflow.session.discovery",
    "DryRunStage": "skyflow.session.session",
    "RunResult": "skyflow.session.session",
    "Session": "skyflow.session.session",
}

__all__ = ["DryRunStage", "PlanningOptions", "RunOptions", "RunResult", "Session", "detect_enabled_clouds",
           "pools_from_config"]

if TYPE_CHECKING:
    from skyflow.runner.context import RunOptions
    from skyflow.session.discovery import detect_enabled_clouds, pools_from_config
    from skyflow.session.planning_options import PlanningOptions
    from skyflow.session.session import DryRunStage, RunResult, Session


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skyflow.session' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
