"""The planner (pure): choose cloud, region and instance for every stage jointly, exactly.

Names are imported on first use: a reader of run state needs a constant of `planner.policy`, not the
solver (numpy, the spec models).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "explain_stage": "skyflow.planner.core",
    "plan_pipeline": "skyflow.planner.core",
    "LOCAL_PLACEMENT": "skyflow.planner.plan",
    "Alternative": "skyflow.planner.plan",
    "EgressCharge": "skyflow.planner.plan",
    "Placement": "skyflow.planner.plan",
    "Plan": "skyflow.planner.plan",
    "forced_plan": "skyflow.planner.plan",
    "CachedCopy": "skyflow.planner.policy",
    "LocalCapacity": "skyflow.planner.policy",
    "Policy": "skyflow.planner.policy",
    "PoolLocation": "skyflow.planner.policy",
}

__all__ = ["LOCAL_PLACEMENT", "Alternative", "CachedCopy", "EgressCharge", "LocalCapacity", "Placement", "Plan",
           "Policy", "PoolLocation", "explain_stage", "forced_plan", "plan_pipeline"]

if TYPE_CHECKING:
    from skyflow.planner.core import explain_stage, plan_pipeline
    from skyflow.planner.plan import LOCAL_PLACEMENT, Alternative, EgressCharge, Placement, Plan, forced_plan
    from skyflow.planner.policy import CachedCopy, LocalCapacity, Policy, PoolLocation


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skyflow.planner' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
