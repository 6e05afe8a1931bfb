"""Opening runs in an MLflow sqlite store with plain SQL, before MLflow has loaded.

Importing MLflow and opening its SQL store takes seconds; a stage that starts needs only its run's id
(for `MLFLOW_RUN_ID`). `SqliteRunOpener` writes the rows `MlflowClient.create_run` writes (a `runs`
row, RUNNING, with its tags and `mlflow.runName`) through the standard library's sqlite3, in
milliseconds, and for a pipeline the store has no experiment for yet the rows `create_experiment`
writes (an `experiments` row and its tags). A store that does not exist yet is first made a copy of
the empty store MLflow made once (lineage/store_template.py); before there is one (the first store
on a machine) only MLflow can make it. Everything else (params, metrics, datasets, status) is still
sent through MLflow by the recorder. It is used only when the schema holds the columns written here
and every other column may be left empty; otherwise (another MLflow schema, another database) the
recorder waits for MLflow. tests/integration/lineage/test_early_runs.py reads the rows written here
back through MLflow's own client and compares them with MLflow's, column by column.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyflow.lineage.mlflow_client import has_columns, schema_lock, sqlite_path
from skyflow.lineage.mlflow_names import TAG_KIND, TAG_PIPELINE, TAG_RUN_KEY
from skyflow.lineage.store_template import seed_new_store

__all__ = ["EarlyExperiment", "SqliteRunOpener"]

RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
# What MLflow's SQL store writes for a run made by create_run (mlflow/store/tracking/sqlalchemy_store.py).
_RUN_COLUMNS = ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
                "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri",
                "experiment_id")
_TAG_COLUMNS = ("key", "value", "run_uuid")
# What it writes for an experiment made by create_experiment (the id is the table's next rowid).
_EXPERIMENT_COLUMNS = ("name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time")
_EXPERIMENT_TAG_COLUMNS = ("key", "value", "experiment_id")
_READ = {"experiments": {"experiment_id", "name", "artifact_location", "lifecycle_stage"},
         "experiment_tags": {"key", "value", "experiment_id"}}


@dataclass(frozen=True)
class EarlyExperiment:
    experiment_id: str
    artifact_location: str


class SqliteRunOpener:
    """Creates RUNNING runs in MLflow's sqlite schema, as `MlflowClient.create_run` does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_uri(cls, tracking_uri: str) -> SqliteRunOpener | None:
        """An opener for a sqlite store whose tables it knows; None for any other store. A store that
        does not exist yet is made first, a copy of the template MLflow made (none yet: None)."""
        path = sqlite_path(tracking_uri)
        if path is None or not (path.is_file() or _seeded(path)):
            return None
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as conn:
                if not (_writable(conn, "runs", _RUN_COLUMNS) and _writable(conn, "tags", _TAG_COLUMNS)
                        and _writable(conn, "experiments", _EXPERIMENT_COLUMNS)
                        and _writable(conn, "experiment_tags", _EXPERIMENT_TAG_COLUMNS) and has_columns(conn, _READ)):
                    return None
        except sqlite3.Error:
            return None
        return cls(path)

    def experiment(self, pipeline: str) -> EarlyExperiment | None:
        """The pipeline's active experiment made by skyflow; None when there is none yet."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT e.experiment_id, e.artifact_location FROM experiments e JOIN experiment_tags t "
                "ON t.experiment_id = e.experiment_id AND t.key = ? AND t.value = ? "
                "WHERE e.name = ? AND e.lifecycle_stage = 'active'", (TAG_PIPELINE, pipeline, pipeline)).fetchone()
        if row is None or not row[1]:
            return None
        return EarlyExperiment(str(row[0]), str(row[1]))

    def create_experiment(self, name: str, artifact_location: str, tags: dict[str, str]) -> EarlyExperiment:
        """A new active experiment with ``tags``, as `MlflowClient.create_experiment` makes it.
        Raises sqlite3.IntegrityError when one of that name exists (another runner made it)."""
        now_ms = int(time.time() * 1000)
        row = (name, artifact_location, "active", now_ms, now_ms)
        with self._connect() as conn:
            cursor = conn.execute(f"INSERT INTO experiments ({', '.join(_EXPERIMENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                                  row)
            experiment_id = int(cursor.lastrowid or 0)
            conn.executemany("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?)",
                             [(k, v, experiment_id) for k, v in tags.items()])
        return EarlyExperiment(str(experiment_id), artifact_location)

    def find_pipeline_run(self, experiment_id: str, run_key: str) -> str | None:
        """The pipeline run tagged with ``run_key`` (the first made, as MlflowStore finds it)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = ? "
                "AND k.value = 'pipeline_run' JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ? "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' ORDER BY r.start_time ASC LIMIT 1",
                (TAG_KIND, TAG_RUN_KEY, run_key, experiment_id)).fetchone()
        return None if row is None else str(row[0])

    def create_run(self, experiment: EarlyExperiment, name: str, tags: dict[str, str],
                   start_time_s: float | None = None) -> str:
        """A new RUNNING run named ``name`` with ``tags``; its id."""
        run_id = uuid.uuid4().hex
        start_ms = int((time.time() if start_time_s is None else start_time_s) * 1000)
        artifact_uri = f"{experiment.artifact_location.rstrip('/')}/{run_id}/artifacts"
        all_tags = {**tags, RUN_NAME_TAG: tags.get(RUN_NAME_TAG, name)}
        row: dict[str, Any] = {
            "run_uuid": run_id, "name": name, "source_type": "UNKNOWN", "source_name": "", "entry_point_name": "",
            "user_id": tags.get(USER_TAG, "unknown"), "status": "RUNNING", "start_time": start_ms, "end_time": None,
            "deleted_time": None, "source_version": "", "lifecycle_stage": "active", "artifact_uri": artifact_uri,
            "experiment_id": int(experiment.experiment_id),
        }
        with self._connect() as conn:
            conn.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                         [row[c] for c in _RUN_COLUMNS])
            conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                             [(k, v, run_id) for k, v in all_tags.items()])
        return run_id

    @contextlib.contextmanager
    def _connect(self) -> Any:
        conn = sqlite3.connect(self.path, timeout=30.0)  # waits out a writer's lock for 30 s
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:  # one transaction, committed on success
                yield conn
        finally:
            conn.close()


def _writable(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> bool:
    """True when ``table`` has ``columns`` and every other column may be left out: nullable, defaulted,
    or the table's only primary key column, an INTEGER (sqlite numbers the row)."""
    info = list(conn.execute(f"PRAGMA table_info({table})"))  # cid, name, type, notnull, default, pk
    keys = [row for row in info if row[5]]
    numbered = keys[0][1] if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER" else None
    return has_columns(conn, {table: columns}) and all(
        row[1] in columns or row[1] == numbered or not row[3] or row[4] is not None for row in info)


def _seeded(path: Path) -> bool:
    """Make the missing store ``path`` a copy of an existing template (under the schema lock MLflow's
    opening takes too); False when there is no template yet: making one needs MLflow."""
    with schema_lock(path):
        return path.is_file() or seed_new_store(path, make_template=False)
