"""The runner: executes a typed Plan, one ready set at a time, with run state in SQLite.

`RunLoop` decides what runs next (from runner.decisions) and records outcomes; `StageWork` does one
stage's work; `build_launch` makes the StageLaunch a backend gets. Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "RunLoop": "skyflow.runner.loop",
    "RunContext": "skyflow.runner.context",
    "RunOptions": "skyflow.runner.context",
    "StageWork": "skyflow.runner.stage_work",
    "StageOutcome": "skyflow.runner.stage_work",
    "RunEvent": "skyflow.runner.events",
    "EventBus": "skyflow.runner.events",
    "RunStore": "skyflow.runner.state",
    "RunRow": "skyflow.runner.state",
    "StageRow": "skyflow.runner.state",
    "build_launch": "skyflow.runner.launches",
    "preview_launch": "skyflow.runner.launches",
}

__all__ = ["EventBus", "RunContext", "RunEvent", "RunLoop", "RunOptions", "RunRow", "RunStore", "StageOutcome",
           "StageRow", "StageWork", "build_launch", "preview_launch"]

if TYPE_CHECKING:
    from skyflow.runner.context import RunContext, RunOptions
    from skyflow.runner.events import EventBus, RunEvent
    from skyflow.runner.launches import build_launch, preview_launch
    from skyflow.runner.loop import RunLoop
    from skyflow.runner.stage_work import StageOutcome, StageWork
    from skyflow.runner.state import RunRow, RunStore, StageRow


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skyflow.runner' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
