"""Learning signals: one plain line per step on stdout, the same numbers in metrics.json, and, when
the stage runs under skyflow with lineage on (MLFLOW_RUN_ID set), MLflow metrics of the stage's run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCALES = ("demo", "full")
_mlflow: Any = None  # the mlflow module once a run was found; False: none (or mlflow is not installed)


def log(stage: str, step: int | str, **values: float) -> None:
    fields = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"{stage} step={step} {fields}", flush=True)
    if isinstance(step, int):
        log_to_mlflow(step, values)


def log_to_mlflow(step: int, values: dict[str, float]) -> None:
    """Per-step metrics into the stage's MLflow run; the stage runs the same without MLflow."""
    global _mlflow
    if _mlflow is None:
        _mlflow = False
        if os.environ.get("MLFLOW_RUN_ID"):
            try:
                import mlflow

                _mlflow = mlflow
            except ImportError:
                print("mlflow is not installed here: metrics go to stdout and metrics.json only", flush=True)
    if _mlflow is False:
        return
    try:
        _mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)
    except Exception as exc:  # the store went away: training goes on, the numbers stay in metrics.json
        print(f"mlflow: {type(exc).__name__}: {exc}; not logging further metrics", flush=True)
        _mlflow = False


def write_metrics(folder: Path, payload: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"run_id": os.environ.get("SKYFLOW_RUN_ID"), **payload}
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")


def read_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "metrics.json").read_text())


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise SystemExit(f"scale must be one of {SCALES}, got {scale!r}")
    return scale
