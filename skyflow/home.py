"""Where skyflow keeps its state on this machine: `$SKYFLOW_HOME`, else `~/.skyflow`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["skyflow_home"]


def skyflow_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$SKYFLOW_HOME` (with `~` expanded), else `~/.skyflow`. Reads the environment: edge code only."""
    env = os.environ if environ is None else environ
    return Path(env.get("SKYFLOW_HOME") or Path.home() / ".skyflow").expanduser()
