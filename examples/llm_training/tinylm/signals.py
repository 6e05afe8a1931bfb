"""Learning signals: one plain line per step on stdout, and the same numbers in metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCALES = ("demo", "full")


def log(stage: str, step: int | str, **values: float) -> None:
    fields = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"{stage} step={step} {fields}", flush=True)


def write_metrics(folder: Path, payload: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"run_id": os.environ.get("SKYFLOW_RUN_ID"), **payload}
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise SystemExit(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def find_file(path: str | Path, name: str) -> Path:
    """An input is a file, or a directory holding ``name``."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / name).is_file():
        return path / name
    raise FileNotFoundError(f"{path}: expected {name} here")
