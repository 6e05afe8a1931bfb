"""`python -m skyflow` is the `skyflow` command."""

from skyflow.cli.main import entry

entry()
