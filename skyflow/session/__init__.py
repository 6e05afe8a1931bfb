"""The edge between users (the CLI, Python) and the pure core: discover, plan, run, resume, cancel, stop."""

from __future__ import annotations

from skyflow.runner.context import RunOptions
from skyflow.session.discovery import PlanningOptions, detect_enabled_clouds, pools_from_config
from skyflow.session.session import DryRunStage, RunResult, Session

__all__ = ["DryRunStage", "PlanningOptions", "RunOptions", "RunResult", "Session", "detect_enabled_clouds",
           "pools_from_config"]
