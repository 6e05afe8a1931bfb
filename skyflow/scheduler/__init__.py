"""skyflow.scheduler."""
