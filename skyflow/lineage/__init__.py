"""skyflow.lineage."""
