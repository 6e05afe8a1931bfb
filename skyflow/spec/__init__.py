"""skyflow.spec."""
