"""The names of stage and run states, shared by the runner, run state, lineage and the CLI.

States are string enums, so they compare equal to (and are stored as) their plain names.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DONE", "FINAL", "RunState", "StageState"]


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"  # outputs reused from an earlier run; nothing ran
    FAILED = "failed"
    SKIPPED = "skipped"  # an upstream stage failed, so this one never ran
    CANCELLED = "cancelled"


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A stage whose outputs downstream stages may use, and the states a stage never leaves.
DONE = frozenset({StageState.SUCCEEDED, StageState.CACHED})
FINAL = frozenset({StageState.SUCCEEDED, StageState.CACHED, StageState.FAILED, StageState.SKIPPED,
                   StageState.CANCELLED})
