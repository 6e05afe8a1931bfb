"""skyflow.backends."""
