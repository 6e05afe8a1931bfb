"""The planner (pure): choose cloud, region and instance for every stage jointly, exactly."""

from __future__ import annotations

from skyflow.planner.core import explain_stage, plan_pipeline
from skyflow.planner.plan import LOCAL_PLACEMENT, Alternative, EgressCharge, Placement, Plan, forced_plan
from skyflow.planner.policy import CachedCopy, LocalCapacity, Policy, PoolLocation

__all__ = ["LOCAL_PLACEMENT", "Alternative", "CachedCopy", "EgressCharge", "LocalCapacity", "Placement", "Plan",
           "Policy", "PoolLocation", "explain_stage", "forced_plan", "plan_pipeline"]
