"""skyflow.runner."""
