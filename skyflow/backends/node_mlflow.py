"""A node's MLflow: log straight to the tracking store when the node reaches it, else into a local store
that the wrapper carries back with the stage's outputs.

The runner gives a stage on a remote node the variables of its MLflow run (`MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_ID`, `MLFLOW_RUN_ID`). On the node, :func:`prepare_tracking` checks whether that
store answers from here: a server that answers (any HTTP status) is logged to directly, as on the
runner's machine. A sqlite or file store lives on the runner's machine, and a server that does not
answer is out of reach: the stage then gets a local MLflow file store under the node's root holding
an experiment and a run with the *same ids*, so `MLFLOW_RUN_ID` means the same run on the node as
anywhere else. After the stage (failed or not), node 0 commits that folder to the stage's artifact
store and writes its record under :func:`capture_key`; the runner's lineage replays what it holds
(metrics with their steps and times, params, tags, artifacts, nested runs) into the stage's run.

The local store's layout is MLflow's file store (`<root>/<experiment>/<run>/{meta.yaml, metrics/,
params/, tags/, artifacts/}`), which every MLflow client, skinny or full, 2.x or 3.x, writes to; it is
written here without importing MLflow, which the node's wrapper interpreter may not have.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PROBE_TIMEOUT_S", "NodeTracking", "capture_key", "prepare_tracking", "store_answers"]

PROBE_TIMEOUT_S = 5.0
_RUN_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")
# Stores that live on the runner's machine: a node never writes to them.
_LOCAL_SCHEMES = ("", "file", "sqlite")
_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def capture_key(run_id: str, stage: str, attempt: int) -> str:
    """Where node 0 leaves the record of an attempt's local MLflow store, beside its result."""
    return f"runs/{run_id}/{stage}/attempt-{attempt}/mlflow.json"


@dataclass(frozen=True)
class NodeTracking:
    """How the stage on this node logs to MLflow: the variables to set, and the local store to carry
    back (None: it logs to the tracking store directly, or has no run)."""

    env: dict[str, str]
    local_store: Path | None = None


def store_answers(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the tracking store answers from this machine (a sqlite or file store never does:
    it is the runner's file)."""
    parsed = urlparse(tracking_uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in _LOCAL_SCHEMES:
        return False
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s):
                return True
        except urllib.error.HTTPError:
            return True  # it answered (an auth proxy, a server without /health)
        except (OSError, ValueError):
            return False
    if scheme in _DATABASE_PORTS and parsed.hostname:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or _DATABASE_PORTS[scheme]), timeout_s):
                return True
        except OSError:
            return False
    return True  # a hosted store (databricks, ...): its client knows how to reach it


def prepare_tracking(env: Mapping[str, str], root: Path) -> NodeTracking:
    """The stage's MLflow variables on this node: unchanged when the store answers, else pointing at
    a local file store under ``root`` that already holds the stage's run."""
    uri, experiment_id, run_id = (env.get(name, "") for name in _RUN_VARS)
    if not (uri and experiment_id and run_id) or store_answers(uri):
        return NodeTracking({})
    store = root / "mlflow" / "mlruns"
    _write_run(store, experiment_id, run_id, env.get("SKYFLOW_STAGE", "stage"))
    return NodeTracking({"MLFLOW_TRACKING_URI": store.resolve().as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"},
                        store.parent)


def _write_run(store: Path, experiment_id: str, run_id: str, name: str) -> None:
    """An experiment and a RUNNING run in MLflow's file-store layout, with the ids of the real ones."""
    now_ms = int(time.time() * 1000)
    experiment = store / experiment_id
    run = experiment / run_id
    for folder in ("metrics", "params", "tags", "artifacts"):
        (run / folder).mkdir(parents=True, exist_ok=True)
    _write_yaml(experiment / "meta.yaml", {
        "artifact_location": experiment.resolve().as_uri(), "creation_time": now_ms, "experiment_id": experiment_id,
        "last_update_time": now_ms, "lifecycle_stage": "active", "name": f"skyflow-node-{experiment_id}"})
    _write_yaml(run / "meta.yaml", {
        "artifact_uri": (run / "artifacts").resolve().as_uri(), "end_time": None, "entry_point_name": "",
        "experiment_id": experiment_id, "lifecycle_stage": "active", "run_id": run_id, "run_name": name,
        "run_uuid": run_id, "source_name": "", "source_type": 4, "source_version": "", "start_time": now_ms,
        "status": 1, "tags": [], "user_id": os.environ.get("USER", "skyflow")})
    (run / "tags" / "mlflow.runName").write_text(name)


def _write_yaml(path: Path, fields: Mapping[str, object]) -> None:
    """Flat YAML of plain scalars (what MLflow's meta.yaml holds), without a YAML library."""
    def scalar(value: object) -> str:
        if value is None:
            return "null"
        if isinstance(value, int | list):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    path.write_text("".join(f"{key}: {scalar(value)}\n" for key, value in fields.items()))
