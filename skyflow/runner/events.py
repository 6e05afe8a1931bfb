"""What the runner reports while it works; the CLI renders these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunEvent:
    kind: str  # running, retrying, succeeded, failed, cached, skipped, cancelled, run-<state>, log
    stage: str | None
    message: str = ""
    cost_usd: float = 0.0
    duration_s: float = 0.0
