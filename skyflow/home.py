"""Where skyflow keeps things on this machine: its state in `$SKYFLOW_HOME` (else `~/.skyflow`), and
what it can always make again (parsed catalogs, an empty lineage store) in the user's cache folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cache_dir", "skyflow_home"]


def skyflow_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$SKYFLOW_HOME` (with `~` expanded), else `~/.skyflow`. Reads the environment: edge code only."""
    env = os.environ if environ is None else environ
    return Path(env.get("SKYFLOW_HOME") or Path.home() / ".skyflow").expanduser()


def cache_dir(*parts: str, environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/skyflow/PARTS` (else `~/.cache/skyflow/PARTS`): files that only save time, shared
    by every `SKYFLOW_HOME` of the user. Not created here."""
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base.joinpath("skyflow", *parts)
