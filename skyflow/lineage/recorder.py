"""LineageRecorder, the one thing the runner calls: the protocol, NullRecorder, and open_recorder."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse, urlunparse

from skyflow.errors import LineageError
from skyflow.lineage.records import RunInfo, StageRecord, StageRun

# Stores that go through MLflow's SQL store: SQLAlchemy and alembic (core dependencies of skyflow).
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@runtime_checkable
class LineageRecorder(Protocol):
    """Receives a run's lineage as it happens. Calls never block on, or fail because of, the store.

    Order: `start_run` once per run (again on resume, same run id and key), `open_stage` as each
    stage starts to run (may wait for the store to open, never fails), `record_stage` once per stage
    that reached a final state, `end_run` once, then `close` when the runner is done.
    """

    def start_run(self, info: RunInfo) -> None: ...

    def open_stage(self, run_id: str, stage: str) -> StageRun | None: ...

    def record_stage(self, rec: StageRecord) -> None: ...

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullRecorder:
    """Records nothing (`--no-lineage`, and runs where lineage is switched off)."""

    def start_run(self, info: RunInfo) -> None:
        return None

    def open_stage(self, run_id: str, stage: str) -> StageRun | None:
        return None

    def record_stage(self, rec: StageRecord) -> None:
        return None

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


def resolve_tracking_uri(tracking_uri: str | None, skyflow_home: Path) -> str:
    """The given URI, else `$MLFLOW_TRACKING_URI`, else `sqlite:///$SKYFLOW_HOME/mlflow.db`.

    Reads the environment: call it from the edge (CLI, runner), not from pure code.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(skyflow_home / 'mlflow.db').resolve()}"


def check_tracking_uri(tracking_uri: str) -> None:
    """Raise LineageError if this MLflow install cannot reach that kind of store."""
    scheme = urlparse(tracking_uri).scheme.split("+")[0]
    if importlib.util.find_spec("mlflow") is None:
        raise LineageError("lineage needs MLflow, a dependency of skyflow that this environment lacks: "
                           "pip install 'mlflow-skinny>=3.17,<4' sqlalchemy alembic, or pass --no-lineage.")
    missing = [name for name in ("sqlalchemy", "alembic") if importlib.util.find_spec(name) is None]
    if scheme in DATABASE_SCHEMES and missing:
        raise LineageError(
            f"lineage store {describe_tracking(tracking_uri)} is a database, which MLflow reaches through "
            f"{' and '.join(missing)}, missing here (dependencies of skyflow): pip install {' '.join(missing)}, "
            "or set MLFLOW_TRACKING_URI=http://HOST:PORT."
        )


def reachable_elsewhere(tracking_uri: str) -> bool:
    """Whether a store can be reached from another machine: a server or database not on loopback.
    A sqlite file (or `./mlruns`) lives on this machine only."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file", "sqlite"):
        return False
    return parsed.hostname not in ("localhost", "127.0.0.1", "::1", None)


def stage_run_environment(run: StageRun | None, *, remote: bool, carries_back: bool = False) -> dict[str, str]:
    """The variables that send a stage's own MLflow calls to its run: none for a remote node that
    cannot reach the store, unless the node's wrapper carries its calls back (``carries_back``: it
    logs directly when it reaches the store, else locally, and the records come back with the outputs)."""
    if run is None or (remote and not carries_back and not reachable_elsewhere(run.tracking_uri)):
        return {}
    return {"MLFLOW_TRACKING_URI": run.tracking_uri, "MLFLOW_EXPERIMENT_ID": run.experiment_id,
            "MLFLOW_RUN_ID": run.run_id}


def describe_tracking(tracking_uri: str) -> str:
    """Where lineage goes, for people: `MLflow store at /home/me/.skyflow/mlflow.db`."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return f"MLflow sqlite store {parsed.path[1:] or tracking_uri}"
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname or ""
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        # Credentials in the URI are not for printing.
        return f"MLflow server {urlunparse(parsed._replace(netloc=netloc))}"
    return f"MLflow tracking URI {tracking_uri}"


def open_recorder(tracking_uri: str | None, skyflow_home: Path, secret_values: Sequence[str], *,
                  defer_open_s: float = 0.0) -> LineageRecorder:
    """A MlflowRecorder on the resolved tracking URI, spooling under `skyflow_home`.

    Raises LineageError at once if the installed MLflow cannot log to that store; an unreachable
    server is not an error (records wait in the spool).
    """
    from skyflow.lineage.mlflow_recorder import MlflowRecorder

    uri = resolve_tracking_uri(tracking_uri, skyflow_home)
    check_tracking_uri(uri)
    return MlflowRecorder(uri, secret_values, skyflow_home=skyflow_home, defer_open_s=defer_open_s)
