"""The state DB file that runs and schedules share: SQLite in WAL mode, safe across processes.

Another process may hold the write lock for a while (a long transaction, a backup, a person with the
sqlite3 shell open): every statement waits for it, with backoff, up to SKYFLOW_STATE_DB_WAIT_S seconds
(default 300) in all, and then fails with one error that says who to look for. A file that is not a
SQLite database, or a damaged one, is an error saying how to start afresh, never a raw traceback. The
error's class is the store's (RunStore raises RunError); this floor cannot name the error tree.
"""

from __future__ import annotations

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
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
