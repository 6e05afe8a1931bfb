"""The `skyflow` command: argument parsing and printing over skyflow.session; no logic of its own."""

from __future__ import annotations

from skyflow.cli.main import cli, main

__all__ = ["cli", "main"]
