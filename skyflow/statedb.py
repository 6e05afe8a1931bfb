"""The state DB file that runs and schedules share: SQLite in WAL mode, safe across processes.

Another process may hold the write lock for a while (a long transaction, a backup, a person with the
sqlite3 shell open): every statement waits for it, with backoff, up to SKYFLOW_STATE_DB_WAIT_S seconds
(default 300) in all, and then fails with one error that says who to look for. A file that is not a
SQLite database, or a damaged one, is an error saying how to start afresh, never a raw traceback. The
error's class is the store's (RunStore raises RunError); this floor cannot name the error tree.

A full disk: beside the DB lies a small reserve file (`state.db.reserve`, 1 MiB, made when the DB is
opened and the space is there). When a write finds the disk full, or a stage's log fills the disk
(`release_reserve_above`), the reserve is deleted, so that the runner can still record that the stage
and the run failed; the write that met the full disk fails with one clear error. The reserve is made
again on the next open once space is free.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar


class StateDBError(Exception):
    """The state DB is locked for too long or cannot be read (for stores that name no error class)."""


ErrorFactory = Callable[[str], Exception]
T = TypeVar("T")
DEFAULT_WAIT_S = 300.0
# SQLite's own busy handler waits this long per try; the tries back off from BACKOFF_S to BACKOFF_MAX_S.
BUSY_TIMEOUT_MS = 5000
BACKOFF_S = 0.05
BACKOFF_MAX_S = 2.0
RESERVE_SUFFIX = ".reserve"
RESERVE_BYTES = 1 << 20


def _wait_s() -> float:
    try:
        return max(0.0, float(os.environ.get("SKYFLOW_STATE_DB_WAIT_S", DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def _locked(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _damaged(path: Path, exc: sqlite3.Error, error: ErrorFactory) -> Exception:
    return error(f"the state DB {path} cannot be read: {exc}; it is damaged or not a SQLite file. Move it "
                    f"aside to start afresh (`mv {path} {path}.broken`): runs recorded in it are then no longer "
                    "known to skyflow, their artifacts stay in the stores")


def _full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _disk_full(path: Path, exc: sqlite3.Error, error: ErrorFactory) -> Exception:
    freed = release_reserve(path)
    then = "; space kept in reserve was freed so that the failure can be recorded" if freed else ""
    return error(f"the disk holding the state DB {path} is full ({exc}){then}; free space there (`df -h "
                 f"{path.parent}`), then `skyflow resume` a run that stopped")


def reserve_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + RESERVE_SUFFIX)


def make_reserve(db_path: Path) -> None:
    """Set RESERVE_BYTES aside beside the DB (real blocks, not a sparse file), if not done already and
    the space is there."""
    reserve = reserve_path(db_path)
    if reserve.exists():
        return
    partial = reserve.with_name(reserve.name + f".{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
        os.replace(partial, reserve)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def release_reserve(db_path: Path) -> bool:
    """Delete the DB's reserve; True if there was one."""
    try:
        reserve_path(db_path).unlink()
    except OSError:
        return False
    return True


def release_reserve_above(path: Path, db_name: str = "state.db") -> bool:
    """Free the reserve of a state DB in a folder above ``path`` (a stage log that filled the disk of
    SKYFLOW_HOME): the runner then has room to record the failure. True if one was freed."""
    return any(release_reserve(folder / db_name) for folder in Path(path).parents
               if reserve_path(folder / db_name).exists())


def _patiently(path: Path, wait_s: float, error: ErrorFactory, statement: Callable[[], T]) -> T:
    """Run one statement, waiting out another process's lock with backoff for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = BACKOFF_S
    while True:
        try:
            return statement()
        except sqlite3.Error as exc:
            if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "disk image is malformed"
                raise _damaged(path, exc, error) from exc
            if _full(exc):
                raise _disk_full(path, exc, error) from exc
            if not _locked(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise error(f"the state DB {path} has been locked by another process for {wait_s:.0f} s; "
                               f"find it with `fuser {path}` and end it, or let skyflow wait longer "
                               "(SKYFLOW_STATE_DB_WAIT_S), then `skyflow resume` a run that stopped") from exc
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


class _Connection(sqlite3.Connection):
    """A connection whose statements wait out another process's lock and fail with clear errors."""

    db_path: Path = Path()
    wait_s: float = DEFAULT_WAIT_S
    error: ErrorFactory = StateDBError

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return _patiently(self.db_path, self.wait_s, self.error,
                          lambda: super(_Connection, self).execute(sql, parameters))


class StateDB:
    """One connection per thread, WAL and a busy timeout; writes in IMMEDIATE transactions."""

    def __init__(self, path: Path, schema: str, *, error: ErrorFactory = StateDBError) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._wait_s = _wait_s()
        self._error = error
        make_reserve(path)
        conn = self._conn()
        _patiently(path, self._wait_s, error, lambda: conn.executescript(schema))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _patiently(self.path, self._wait_s, self._error, lambda: sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False,
                factory=_Connection))
            conn.db_path, conn.wait_s, conn.error = self.path, self._wait_s, self._error
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
