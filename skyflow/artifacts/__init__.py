"""skyflow.artifacts."""
