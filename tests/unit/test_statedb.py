"""The shared state DB floor: its patience setting, the disk-full reserve, errors passed through as they
are, and transactions that leave nothing behind when their block fails."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from skyflow.statedb import (
    DEFAULT_WAIT_S,
    RESERVE_BYTES,
    StateDB,
    StateDBError,
    _wait_s,
    make_reserve,
    release_reserve,
    release_reserve_above,
    reserve_path,
)

SCHEMA = "CREATE TABLE IF NOT EXISTS notes (body BLOB);"


def open_db(tmp_path: Path) -> StateDB:
    return StateDB(tmp_path / "state.db", SCHEMA)


@pytest.mark.parametrize(("setting", "expected"), [("soon", DEFAULT_WAIT_S), ("-5", 0.0), ("12.5", 12.5)])
def test_the_lock_patience_comes_from_the_environment_and_a_bad_value_keeps_the_default(
        monkeypatch: pytest.MonkeyPatch, setting: str, expected: float) -> None:
    monkeypatch.setenv("SKYFLOW_STATE_DB_WAIT_S", setting)
    assert _wait_s() == expected


def test_a_full_disk_frees_the_reserve_and_says_how_to_recover(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    reserve = reserve_path(db.path)
    assert reserve.stat().st_size == RESERVE_BYTES
    db._conn().execute("PRAGMA max_page_count=20")  # the DB cannot grow: SQLite answers SQLITE_FULL
    with pytest.raises(StateDBError) as raised, db._tx() as conn:
        conn.execute("INSERT INTO notes VALUES (?)", (b"x" * 200_000,))
    message = str(raised.value)
    assert f"the disk holding the state DB {db.path} is full" in message
    assert "space kept in reserve was freed so that the failure can be recorded" in message
    assert f"`df -h {tmp_path}`" in message and "`skyflow resume`" in message
    assert not reserve.exists()
    # the write was rolled back whole and the connection takes the next statement
    assert db._conn().execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0

    with pytest.raises(StateDBError) as again, db._tx() as conn:
        conn.execute("INSERT INTO notes VALUES (?)", (b"x" * 200_000,))
    assert "is full" in str(again.value) and "reserve was freed" not in str(again.value)


def test_a_failing_block_rolls_its_writes_back(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    with pytest.raises(KeyError), db._tx() as conn:
        conn.execute("INSERT INTO notes VALUES (?)", (b"half",))
        raise KeyError("the caller failed midway")
    conn = db._conn()
    assert not conn.in_transaction
    assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
    with db._tx() as tx:
        tx.execute("INSERT INTO notes VALUES (?)", (b"whole",))
    assert [row[0] for row in conn.execute("SELECT body FROM notes")] == [b"whole"]


def test_an_error_that_is_not_a_lock_is_raised_as_sqlite_raised_it(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        db._conn().execute("SELECT * FROM missing")


def test_a_reserve_that_cannot_be_written_leaves_no_partial_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = tmp_path / "state.db"

    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    make_reserve(db_path)
    assert list(tmp_path.iterdir()) == []


def test_releasing_a_reserve_says_whether_there_was_one(tmp_path: Path) -> None:
    db_path = tmp_path / "home" / "state.db"
    db_path.parent.mkdir()
    assert release_reserve(db_path) is False
    make_reserve(db_path)
    log = tmp_path / "home" / "runs" / "r1" / "train" / "stage.log"
    assert release_reserve_above(log) is True
    assert not reserve_path(db_path).exists()
    assert release_reserve_above(log) is False
