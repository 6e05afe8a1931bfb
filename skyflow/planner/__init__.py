"""skyflow.planner."""
