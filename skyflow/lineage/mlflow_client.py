"""Opening an MLflow client safely: a new sqlite store's schema is made under a file lock.

Two processes that open a fresh sqlite store at once (a run and the background drain, or `skyflow
lineage`) would both run MLflow's schema migrations and can leave `_alembic_tmp_*` tables behind.
Every skyflow process opens a sqlite store through `open_client`, which holds an exclusive `flock`
on `<db>.lock` while the store is made, so one process creates the tables and the others wait. A
new store starts as a copy of an empty one MLflow made once (skyflow/lineage/store_template.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from skyflow.lineage.store_template import seed_new_store

if TYPE_CHECKING:
    from mlflow import MlflowClient


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for other stores and `:memory:`."""
    parsed = urlparse(tracking_uri)
    # sqlite:///rel.db has path "/rel.db", sqlite:////abs/x.db has "//abs/x.db".
    if parsed.scheme != "sqlite" or parsed.path in ("", "/", "/:memory:"):
        return None
    return Path(parsed.path[1:])


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI that exists; None otherwise."""
    path = sqlite_path(tracking_uri)
    return path if path is not None and path.is_file() else None


def has_columns(conn: sqlite3.Connection, columns: Mapping[str, Iterable[str]]) -> bool:
    """Whether each table has (at least) the columns given for it: MLflow's schema as a reader or
    writer of its tables without MLflow expects it."""
    return all(set(names) <= {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
               for table, names in columns.items())


def artifact_root_for(tracking_uri: str) -> str | None:
    """Where a sqlite store keeps artifacts: beside its database file. None: the server decides."""
    path = sqlite_path(tracking_uri)
    return None if path is None else (path.parent / "mlflow-artifacts").resolve().as_uri()


@contextlib.contextmanager
def schema_lock(db_path: Path) -> Iterator[None]:
    """Hold the store's schema lock (`<db>.lock` beside it) for the duration."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with (db_path.parent / f"{db_path.name}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def store_failures_as_lineage_errors(where: str) -> Iterator[None]:
    """A failed query to the store inside the block (sqlite, MLflow, the database driver under MLflow's
    SQL store) becomes one LineageError naming ``where``; anything else is a bug and keeps its traceback."""
    from skyflow.errors import LineageError

    try:
        yield
    except LineageError:
        raise
    except Exception as exc:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if not isinstance(exc, sqlite3.Error) and not names & {"MlflowException", "DBAPIError"}:
            raise
        detail = getattr(exc, "message", None) or getattr(exc, "orig", None) or exc
        raise LineageError(f"cannot query {where}: {detail}") from exc


def open_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient whose store is ready: for sqlite, its tables made under the schema lock, WAL on."""
    from mlflow import MlflowClient

    quiet_schema_logs()
    db_path = sqlite_path(tracking_uri)
    if db_path is None:
        return MlflowClient(tracking_uri=tracking_uri)
    with schema_lock(db_path):
        if not db_path.exists():
            seed_new_store(db_path)
        use_write_ahead_log(db_path)
        client = MlflowClient(tracking_uri=tracking_uri)
        _ = client._tracking_client.store  # makes the store, and the tables of a new one
    tune_sqlite_engine(client)
    return client


def quiet_schema_logs() -> None:
    # MLflow announces its own table creation at INFO; the runner owns the terminal.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def use_write_ahead_log(db_path: Path) -> None:
    """Put a sqlite store in WAL mode (a setting kept in the file): a commit then needs no fsync of
    its own with synchronous=NORMAL, and readers never block the writer. Best effort: a store that
    is busy right now keeps its mode."""
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=5.0)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def _sqlite_connection_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # NORMAL is durable against a killed process in WAL mode (only power loss can drop the last
    # commits, and the lineage spool is the record of what was not yet sent).
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def tune_sqlite_engine(client: MlflowClient) -> None:
    """Apply the connection pragmas to the engine MLflow made for a sqlite store."""
    from sqlalchemy import event

    engine = getattr(client._tracking_client.store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _sqlite_connection_pragmas):
        event.listen(engine, "connect", _sqlite_connection_pragmas)
        engine.dispose()  # connections opened before the listener reconnect with it
