"""The `skyflow` command: argument parsing and printing over skyflow.session; no logic of its own.

Nothing is imported here until asked for: the entry point (skyflow.cli.daemon.client) first decides
whether a running daemon serves the command, before click and the commands load."""

from __future__ import annotations

TYPE_CHECKING = False  # without importing typing (see skyflow/__init__.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["cli", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from skyflow.cli import main as module

        return getattr(module, name)
    raise AttributeError(f"module 'skyflow.cli' has no attribute {name!r}")
