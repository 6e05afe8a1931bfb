"""Reading skyflow's stage runs back out of MLflow, for `skyflow lineage`: straight from a sqlite store's
tables when the store is one (milliseconds, no MLflow import), else through the MLflow client.

Both readers answer the same two questions with the same plain records: the stage runs whose datasets
include a digest (or a digest prefix), and the stage runs whose `skyflow.output_uris` tag names a URI;
each run newest first, at most `MAX_RUNS`, with its tags and its datasets (`mlflow.data.context`
`input` or `output`). The sqlite reader reads MLflow's own schema (tables `experiments`,
`experiment_tags`, `runs`, `tags`, `inputs`, `input_tags`, `datasets`) and is used only when those
tables have the columns it reads; tests run both readers on one store and compare.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skyflow.lineage.mlflow_client import has_columns, sqlite_file
from skyflow.lineage.mlflow_names import CONTEXT_TAG, TAG_KIND, TAG_OUTPUT_URIS, TAG_PIPELINE, quote_filter_value

__all__ = ["MAX_RUNS", "DatasetEntry", "LineageReader", "MlflowLineageReader", "SqliteLineageReader", "StageRunView",
           "open_reader"]

MAX_RUNS = 200
# The columns the sqlite reader reads; a store without them (another MLflow schema) is read by the client.
_COLUMNS = {
    "experiments": {"experiment_id", "lifecycle_stage"},
    "experiment_tags": {"key", "value", "experiment_id"},
    "runs": {"run_uuid", "name", "start_time", "lifecycle_stage", "experiment_id"},
    "tags": {"key", "value", "run_uuid"},
    "inputs": {"input_uuid", "source_type", "source_id", "destination_type", "destination_id"},
    "input_tags": {"input_uuid", "name", "value"},
    "datasets": {"dataset_uuid", "name", "digest", "dataset_source", "dataset_profile"},
}


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset a run logged: MLflow's cut digest, its source JSON and profile JSON, and its context."""

    name: str
    digest: str
    source: str
    profile: str | None
    context: str | None


@dataclass(frozen=True)
class StageRunView:
    """A stage run as lineage needs it."""

    run_id: str
    experiment_id: str
    run_name: str | None
    start_time: int | None  # ms
    tags: dict[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetEntry, ...] = ()


class LineageReader(Protocol):
    """Reads skyflow's experiments and stage runs out of one tracking store."""

    def experiment_ids(self) -> list[str]: ...

    def runs_with_digest(self, experiments: Sequence[str], digest: str, *, prefix: bool) -> list[StageRunView]: ...

    def runs_with_output_uri(self, experiments: Sequence[str], uri: str) -> list[StageRunView]: ...


def open_reader(tracking_uri: str) -> LineageReader:
    """The sqlite reader for a sqlite store with the schema it knows, else the MLflow client's."""
    path = sqlite_file(tracking_uri)
    if path is not None:
        reader = SqliteLineageReader.open(path)
        if reader is not None:
            return reader
    return MlflowLineageReader(tracking_uri)


class SqliteLineageReader:
    """Reads MLflow's sqlite tables directly, read-only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path) -> SqliteLineageReader | None:
        """A reader on ``path``; None when its tables are not the ones this reader knows."""
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            if not has_columns(conn, _COLUMNS):
                conn.close()
                return None
        except sqlite3.Error:
            return None
        return cls(conn)

    def experiment_ids(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT e.experiment_id FROM experiments e JOIN experiment_tags t ON t.experiment_id = e.experiment_id "
            "WHERE t.key = ? AND t.value != '' AND e.lifecycle_stage = 'active' ORDER BY e.experiment_id",
            (TAG_PIPELINE,))
        return [str(row[0]) for row in rows]

    def runs_with_digest(self, experiments: Sequence[str], digest: str, *, prefix: bool) -> list[StageRunView]:
        clause = "d.digest LIKE ? ESCAPE '\\'" if prefix else "d.digest = ?"
        value = _like_escape(digest) + "%" if prefix else digest
        query = ("SELECT DISTINCT r.run_uuid, r.start_time FROM runs r "
                 "JOIN inputs i ON i.destination_id = r.run_uuid AND i.destination_type = 'RUN' "
                 "AND i.source_type = 'DATASET' JOIN datasets d ON d.dataset_uuid = i.source_id "
                 f"{self._stage_run_filter(experiments)} AND {clause} ORDER BY r.start_time DESC LIMIT ?")
        return self._views([row[0] for row in self.conn.execute(query, (*experiments, value, MAX_RUNS))])

    def runs_with_output_uri(self, experiments: Sequence[str], uri: str) -> list[StageRunView]:
        query = ("SELECT r.run_uuid FROM runs r JOIN tags u ON u.run_uuid = r.run_uuid AND u.key = ? "
                 f"{self._stage_run_filter(experiments)} AND u.value LIKE ? ESCAPE '\\' "
                 "ORDER BY r.start_time DESC LIMIT ?")
        rows = self.conn.execute(query, (TAG_OUTPUT_URIS, *experiments, f"%{_like_escape(uri)}%", MAX_RUNS))
        return self._views([row[0] for row in rows])

    @staticmethod
    def _stage_run_filter(experiments: Sequence[str]) -> str:
        marks = ",".join("?" * len(experiments))
        return (f"JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = '{TAG_KIND}' AND k.value = 'stage_run' "
                f"WHERE r.lifecycle_stage = 'active' AND r.experiment_id IN ({marks})")

    def _views(self, run_ids: list[str]) -> list[StageRunView]:
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        for run_id, key, value in self.conn.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", run_ids):
            tags[run_id][key] = value
        datasets: dict[str, list[DatasetEntry]] = {run_id: [] for run_id in run_ids}
        for run_id, name, digest, source, profile, context in self.conn.execute(
                "SELECT i.destination_id, d.name, d.digest, d.dataset_source, d.dataset_profile, c.value "
                "FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id LEFT JOIN input_tags c "
                f"ON c.input_uuid = i.input_uuid AND c.name = ? WHERE i.destination_id IN ({marks}) "
                "AND i.destination_type = 'RUN' AND i.source_type = 'DATASET' ORDER BY i.rowid",
                (CONTEXT_TAG, *run_ids)):
            datasets[run_id].append(DatasetEntry(name, digest, source, profile, context))
        info = {row[0]: row[1:] for row in self.conn.execute(
            f"SELECT run_uuid, experiment_id, name, start_time FROM runs WHERE run_uuid IN ({marks})", run_ids)}
        return [StageRunView(run_id, str(info[run_id][0]), info[run_id][1], info[run_id][2], tags[run_id],
                             tuple(datasets[run_id])) for run_id in run_ids]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MlflowLineageReader:
    """Reads through MlflowClient: any store MLflow can open (a server, another database)."""

    def __init__(self, tracking_uri: str) -> None:
        from skyflow.lineage.mlflow_client import open_client

        self.client = open_client(tracking_uri)

    def experiment_ids(self) -> list[str]:
        from skyflow.lineage.mlflow_store import skyflow_experiment_ids

        return skyflow_experiment_ids(self.client)

    def runs_with_digest(self, experiments: Sequence[str], digest: str, *, prefix: bool) -> list[StageRunView]:
        clause = f"LIKE '{quote_filter_value(digest)}%'" if prefix else f"= '{quote_filter_value(digest)}'"
        return self._search(experiments, f"dataset.digest {clause}")

    def runs_with_output_uri(self, experiments: Sequence[str], uri: str) -> list[StageRunView]:
        return self._search(experiments, f"tags.`{TAG_OUTPUT_URIS}` LIKE '%{quote_filter_value(uri)}%'")

    def _search(self, experiments: Sequence[str], clause: str) -> list[StageRunView]:
        runs = self.client.search_runs(list(experiments), f"tags.`{TAG_KIND}` = 'stage_run' AND {clause}",
                                       max_results=MAX_RUNS, order_by=["attributes.start_time DESC"])
        return [StageRunView(run.info.run_id, run.info.experiment_id, run.info.run_name, run.info.start_time,
                             dict(run.data.tags), tuple(_entries(run))) for run in runs]


def _entries(run: Any) -> Iterator[DatasetEntry]:
    for entry in run.inputs.dataset_inputs if run.inputs else []:
        context = next((tag.value for tag in entry.tags if tag.key == CONTEXT_TAG), None)
        d = entry.dataset
        yield DatasetEntry(d.name, d.digest, d.source, d.profile, context)


@contextlib.contextmanager
def reading(reader: LineageReader) -> Iterator[LineageReader]:
    """Close a sqlite reader's connection when done (the client's needs nothing)."""
    try:
        yield reader
    finally:
        if isinstance(reader, SqliteLineageReader):
            reader.conn.close()
