"""A new sqlite store copied from the template is the store MLflow's own migrations make.

Real MLflow on both sides: one store made by MLflow's migrations alone, one by `open_client` (which
copies the template, making it first), compared table by table, then used through MLflow's client.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from skyflow.lineage.mlflow_client import open_client
from skyflow.lineage.store_template import template_path


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this module's own: the template is made by the first test that needs it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    return shared_cache


def definition(sql: str) -> tuple[str, frozenset[str]]:
    """A CREATE statement with its columns and constraints as a set: MLflow's migrations rebuild
    tables on sqlite and two of its own runs may list the same constraints in another order."""
    text = " ".join(sql.split())
    head, _, body = text.partition("(")
    parts, depth, current = [], 0, ""
    for char in body.rstrip(")").rstrip():
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return head.strip(), frozenset([*parts, current.strip()])


def schema(db: Path) -> tuple[set[tuple[str, tuple[str, frozenset[str]]]], list[tuple[str]]]:
    """Every table, index and trigger with its definition, and the schema version."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        objects = {(str(name), definition(str(sql))) for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")}
        return objects, conn.execute("SELECT version_num FROM alembic_version").fetchall()


def template() -> Path:
    path = template_path()
    assert path is not None, "MLflow and SQLAlchemy are installed here"
    return path


def rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"SELECT * FROM {table}").fetchall()


def migrated_by_mlflow(db: Path, artifacts: Path) -> None:
    # a path, as MlflowClient passes ./mlruns (SqlAlchemyStore.__init__ is unannotated)
    store = SqlAlchemyStore(f"sqlite:///{db}", str(artifacts))  # type: ignore[no-untyped-call]
    store.engine.dispose()


def test_a_copied_store_has_mlflows_own_schema_and_default_experiment(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow puts the Default experiment's artifacts under ./mlruns
    made = tmp_path / "made.db"
    migrated_by_mlflow(made, tmp_path / "mlruns")
    copied = tmp_path / "home" / "mlflow.db"
    open_client(f"sqlite:///{copied}")

    assert template().is_file() and template().is_relative_to(cache)
    assert schema(copied) == schema(made)
    assert schema(copied)[1], "no schema version recorded"
    # MLflow itself added the Default experiment to the copy, as it does to a new store.
    default_made, default_copied = rows(made, "experiments"), rows(copied, "experiments")
    assert [(r[0], r[1], r[2], r[3]) for r in default_copied] == [(r[0], r[1], r[2], r[3]) for r in default_made]
    assert rows(copied, "workspaces") == rows(made, "workspaces")


def test_a_copied_store_takes_runs_metrics_and_models_through_mlflow(cache: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    experiment = client.create_experiment("pipe", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment, run_name="train")
    client.log_metric(run.info.run_id, "loss", 0.25, step=3)
    client.log_param(run.info.run_id, "lr", "0.1")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny")

    again = open_client(uri)  # a second process would open it the same way
    read = again.get_run(run.info.run_id)
    assert read.data.metrics == {"loss": 0.25} and read.data.params == {"lr": "0.1"}
    assert read.info.status == "FINISHED"
    assert [m.name for m in again.search_registered_models()] == ["tiny"]
    assert again.get_experiment(experiment).name == "pipe"
    assert int(experiment) == 1  # numbered after the Default experiment, as in a store MLflow made


def test_the_template_is_made_once_and_every_new_store_is_a_copy(cache: Path, tmp_path: Path) -> None:
    open_client(f"sqlite:///{tmp_path / 'one.db'}")
    made_once = template()
    made = made_once.stat()
    open_client(f"sqlite:///{tmp_path / 'two.db'}")
    assert (made_once.stat().st_ino, made_once.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    assert rows(made_once, "experiments") == []  # copies never write back into it
    assert schema(tmp_path / "two.db") == schema(tmp_path / "one.db")


def test_a_damaged_template_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    open_client(f"sqlite:///{tmp_path / 'one.db'}")
    template().write_bytes(b"not a database")
    open_client(f"sqlite:///{tmp_path / 'two.db'}")
    assert schema(tmp_path / "two.db") == schema(tmp_path / "one.db")
    assert rows(template(), "experiments") == []


def test_without_a_usable_cache_folder_mlflow_makes_the_tables_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    made = tmp_path / "made.db"
    migrated_by_mlflow(made, tmp_path / "mlruns")
    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert not template().exists()
    assert schema(tmp_path / "mlflow.db") == schema(made)
    assert client.get_experiment("0").name == "Default"


def test_a_template_that_mlflow_fails_to_make_leaves_nothing_and_mlflow_makes_the_tables_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error of MLflow's or SQLAlchemy's own while making the template (here: the cache folder's
    file system failing sqlite once MLflow has begun writing, injected there) is not the run's error,
    and leaves no half-made template behind."""
    import sqlalchemy.exc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_init = SqlAlchemyStore.__init__

    def failing_in_the_cache(self: SqlAlchemyStore, db_uri: str, *args: object, **kwargs: object) -> None:
        real_init(self, db_uri, *args, **kwargs)  # type: ignore[no-untyped-call]  # mlflow leaves it unannotated
        if str(tmp_path / "cache") in db_uri:
            self.engine.dispose()
            raise sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(SqlAlchemyStore, "__init__", failing_in_the_cache)
    made = tmp_path / "made.db"
    migrated_by_mlflow(made, tmp_path / "mlruns")
    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert not template().exists()
    assert not [path for path in template().parent.iterdir() if path.name.endswith(".partial")]
    assert schema(tmp_path / "mlflow.db") == schema(made)
    assert client.get_experiment("0").name == "Default"
