"""A new sqlite lineage store starts as a copy of an empty store that MLflow itself made.

MLflow makes the tables of a new sqlite store by running every one of its schema migrations, about
two seconds of CPU, and a first `skyflow run` on a machine (or in a new `SKYFLOW_HOME`) waits for it.
The first time, the same migrations make an empty template under the user's cache folder, keyed by
the versions of MLflow and SQLAlchemy that made it; its Default experiment is removed, so that
MLflow adds it to each copy as it does for a new store (under that store's own artifact root).
Every later new store is a copy of the template: the same schema and schema version, made in
milliseconds. MLflow still checks each copy's schema version when it opens it. A template that
cannot be made or read (a read-only cache folder) only means MLflow makes the tables itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from skyflow.home import cache_dir

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_ID = 0


def seed_new_store(db_path: Path, *, make_template: bool = True) -> bool:
    """Make ``db_path`` (which must not exist yet; the caller holds its schema lock) a copy of the
    template, made first (by MLflow) unless ``make_template`` is False. False when there is no
    template to copy: MLflow then makes the tables itself."""
    template = _template() if make_template else _existing_template()
    if template is None:
        return False
    partial = db_path.with_name(f".{db_path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        os.replace(partial, db_path)
    except OSError as exc:
        log.debug("lineage: cannot copy the store template %s: %s", template, exc)
        partial.unlink(missing_ok=True)
        return False
    return True


def template_path() -> Path | None:
    """Where the template for the installed MLflow and SQLAlchemy is kept (their versions read from
    the installed distributions, without importing either); None when one is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        made_by = f"mlflow-{version('mlflow-skinny')}-sqlalchemy-{version('sqlalchemy')}"
    except PackageNotFoundError:
        return None
    return cache_dir("mlflow-stores") / f"{made_by}.db"


def _existing_template() -> Path | None:
    path = template_path()
    return path if path is not None and _complete(path) else None


def _template() -> Path | None:
    """The template, made now if it is missing; None when it cannot be made."""
    from skyflow.lineage.mlflow_client import schema_lock

    path = template_path()
    if path is None:
        return None
    if _complete(path):
        return path
    try:
        with schema_lock(path):
            if not _complete(path):
                _make_template(path)
    except Exception as exc:  # also MLflow's and SQLAlchemy's own errors: any failure to make it
        log.debug("lineage: cannot make the store template %s: %s", path, exc)
        return None
    return path if _complete(path) else None


def _make_template(path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="skyflow-store-template-") as artifacts:
            store = SqlAlchemyStore(f"sqlite:///{partial}", Path(artifacts).as_uri())  # type: ignore[no-untyped-call]
            store.engine.dispose()
        with contextlib.closing(sqlite3.connect(partial)) as conn, conn:
            conn.execute("DELETE FROM experiments WHERE experiment_id = ?", (DEFAULT_EXPERIMENT_ID,))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # half a template is never left for the next process to find
        raise


def _complete(path: Path) -> bool:
    """Whether ``path`` is a template: a schema version recorded and no experiment yet."""
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = conn.execute("SELECT COUNT(*) FROM experiments").fetchone()
    except sqlite3.Error:
        return False
    return len(versions) == 1 and experiments == (0,)
