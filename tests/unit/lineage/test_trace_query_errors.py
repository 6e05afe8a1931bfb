"""`skyflow lineage` when the store fails a query: a store error is one LineageError naming the store,
anything else (a bug) keeps its traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from skyflow.errors import LineageError
from skyflow.lineage.store_reader import StageRunView
from skyflow.lineage.trace import trace_artifact


class FailingReader:
    """A reader whose store answers the experiment listing, then fails each search with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def experiment_ids(self) -> list[str]:
        return ["1"]

    def runs_with_digest(self, experiments: Sequence[str], digest: str, *, prefix: bool) -> list[StageRunView]:
        raise self.error

    def runs_with_output_uri(self, experiments: Sequence[str], uri: str) -> list[StageRunView]:
        raise self.error


def test_a_failed_sqlite_query_is_a_lineage_error_naming_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    monkeypatch.setattr("skyflow.lineage.trace.open_reader",
                        lambda uri: FailingReader(sqlite3.OperationalError("database is locked")))
    with pytest.raises(LineageError) as info:
        trace_artifact(f"sqlite:///{db}", "sha256:" + "ab" * 32)
    assert str(info.value) == f"cannot query MLflow sqlite store {db}: database is locked"


def test_an_mlflow_error_is_a_lineage_error_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setattr("skyflow.lineage.trace.open_reader",
                        lambda uri: FailingReader(MlflowException("API request to endpoint failed with 503")))
    with pytest.raises(LineageError, match=r"^cannot query MLflow server https://mlflow\.example/: API request to "
                                           r"endpoint failed with 503$"):
        trace_artifact("https://bob:secret@mlflow.example/", "s3://bucket/model")


def test_an_error_that_is_no_store_error_is_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    monkeypatch.setattr("skyflow.lineage.trace.open_reader", lambda uri: FailingReader(KeyError("skyflow.stage")))
    with pytest.raises(KeyError, match=r"skyflow\.stage"):
        trace_artifact(f"sqlite:///{db}", "sha256:" + "ab" * 32)
