"""skyflow.cli."""
