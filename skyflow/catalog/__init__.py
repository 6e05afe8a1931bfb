"""skyflow.catalog."""
