"""How to plan, as a user says it: a value of its own, so that a command module can declare the
planning flags without importing the planner and the backends behind them."""

from __future__ import annotations

from dataclasses import dataclass

from skyflow.planner.policy import DEFAULT_TIME_LIMIT_S

__all__ = ["PlanningOptions"]


@dataclass(frozen=True)
class PlanningOptions:
    """How to plan, as a user says it (the flags of `skyflow plan` and `skyflow run`; lists are comma-separated)."""

    catalog_dir: str | None = None
    egress_file: str | None = None
    minimize: str = "cost"
    deadline: float | None = None
    max_cost: float | None = None
    infra: str | None = None
    all_clouds: bool = False
    allow_clouds: str | None = None
    block_clouds: str | None = None
    allow_regions: str | None = None
    block_regions: str | None = None
    time_limit: float = DEFAULT_TIME_LIMIT_S
