"""`python -m skyflow` is the `skyflow` command."""

from skyflow.cli.daemon.client import main

main()
