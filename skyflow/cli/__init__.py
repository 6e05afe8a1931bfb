"""The `skyflow` command: argument parsing and printing over skyflow.session; no logic of its own.

Nothing is imported here until asked for: the entry point (skyflow.cli.daemon.client) first decides
whether a running daemon serves the command, before click and the commands load."""

from __future__ import annotations

TYPE_CHECKING = False  # without importing typing (see skyflow/__init__.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["cli"]


def __getattr__(name: str) -> Any:
    # Not `from skyflow.cli import main`: that asks this package for `main` first, which lands here
    # again before the submodule is imported. (The submodule `skyflow.cli.main` is what `main` names
    # here once it is loaded, so its function `main` is no public name of the package.)
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("skyflow.cli.main"), name)
    raise AttributeError(f"module 'skyflow.cli' has no attribute {name!r}")
