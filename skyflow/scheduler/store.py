"""Schedules, fires, watched-input fingerprints and the scheduler lease, in the state DB.

Every fire is claimed in one transaction that also checks the lease, moves the schedule's
watermark and clears a pending change; (schedule, fire key) is unique. So a scheduler that lost
its lease cannot fire, and no tick or change ever fires twice, even across restarts.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skyflow.errors import SchedulerError
from skyflow.scheduler.decisions import Fingerprint, Fire, ScheduleView
from skyflow.statedb import StateDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
  name TEXT PRIMARY KEY, target TEXT NOT NULL, pipeline TEXT NOT NULL, cron TEXT, timezone TEXT NOT NULL,
  on_change_json TEXT NOT NULL, concurrency TEXT NOT NULL, catchup TEXT NOT NULL, params_json TEXT NOT NULL,
  run_args_json TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
  watermark_at REAL NOT NULL, pending_change TEXT, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_inputs (
  name TEXT NOT NULL, ref TEXT NOT NULL, uri TEXT NOT NULL, meta TEXT NOT NULL, digest TEXT,
  seen_at REAL NOT NULL, PRIMARY KEY (name, ref)
);
CREATE TABLE IF NOT EXISTS schedule_fires (
  name TEXT NOT NULL, fire_key TEXT NOT NULL, run_id TEXT NOT NULL, reason TEXT NOT NULL, tick_at REAL,
  claimed_at REAL NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER, log_path TEXT,
  ended_at REAL, outcome TEXT, PRIMARY KEY (name, fire_key)
);
CREATE TABLE IF NOT EXISTS scheduler_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT, pid INTEGER, host TEXT, acquired_at REAL, expires_at REAL
);
"""


@dataclass(frozen=True)
class ScheduleRecord:
    """A stored schedule: what to run, when, and where it stands."""

    name: str
    target: str
    pipeline: str
    cron: str | None
    timezone: str
    on_change: tuple[tuple[str, str], ...]  # (ref as written, resolved URI or path)
    concurrency: str
    catchup: str
    params: dict[str, Any]
    run_args: tuple[str, ...]
    paused: bool = False
    created_at: float = 0.0
    watermark_at: float = 0.0
    pending_change: str | None = None

    def view(self) -> ScheduleView:
        return ScheduleView(self.name, self.cron, self.timezone, self.concurrency,  # type: ignore[arg-type]
                            self.catchup, self.watermark_at, self.pending_change, self.paused)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FireRow:
    name: str
    fire_key: str
    run_id: str
    reason: str
    tick_at: float | None
    claimed_at: float
    owner: str
    state: str  # claimed -> started -> ended
    pid: int | None
    log_path: str | None
    ended_at: float | None
    outcome: str | None


def run_id_for(name: str, fire: Fire, now_s: float) -> str:
    """Cron runs are named by their tick, so a tick maps to one run id; others by when they fired."""
    when = fire.tick_s if fire.tick_s is not None else now_s
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d-%H%M%S")
    kind = fire.key.split(":", 1)[0]
    suffix = "" if fire.tick_s is not None else f"-{int(now_s * 1000) % 1000:03d}"
    return f"{name}-{kind}-{stamp}{suffix}"


class ScheduleStore(StateDB):
    """The scheduler's tables beside the runner's, in ``state.db`` (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA, error=SchedulerError)

    # -- schedules ----------------------------------------------------------------------------
    def save(self, record: ScheduleRecord, now_s: float) -> ScheduleRecord:
        """Add a schedule, or update one of that name keeping its watermark and seen fingerprints."""
        with self._tx() as db:
            old = db.execute("SELECT watermark_at, created_at FROM schedules WHERE name=?", (record.name,)).fetchone()
            created, watermark = (old["created_at"], old["watermark_at"]) if old else (now_s, now_s)
            db.execute("INSERT OR REPLACE INTO schedules VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (record.name, record.target, record.pipeline, record.cron, record.timezone,
                        json.dumps(record.on_change), record.concurrency, record.catchup,
                        json.dumps(record.params), json.dumps(record.run_args), int(record.paused), created,
                        watermark, None, now_s))
            refs = [ref for ref, _ in record.on_change]
            marks = ",".join("?" * len(refs))
            db.execute(f"DELETE FROM schedule_inputs WHERE name=? AND ref NOT IN ({marks})", (record.name, *refs))
        return self.get(record.name)

    def get(self, name: str) -> ScheduleRecord:
        row = self._conn().execute("SELECT * FROM schedules WHERE name=?", (name,)).fetchone()
        if row is None:
            from skyflow.matching import close_matches

            names = [r.name for r in self.schedules()]
            matches = close_matches(name, names)
            hint = f" Did you mean {', '.join(matches)}?" if matches else " See `skyflow schedule list`."
            raise SchedulerError(f"no schedule {name!r} in {self.path}.{hint}")
        return _record(row)

    def schedules(self) -> list[ScheduleRecord]:
        return [_record(r) for r in self._conn().execute("SELECT * FROM schedules ORDER BY name")]

    def set_paused(self, name: str, paused: bool, now_s: float) -> None:
        self.get(name)
        with self._tx() as db:
            # Ticks that fell due while paused are skipped on resume (as after `kubectl patch ... suspend`).
            db.execute("UPDATE schedules SET paused=?, updated_at=?, watermark_at=CASE WHEN ? THEN watermark_at "
                       "ELSE MAX(watermark_at, ?) END WHERE name=?", (int(paused), now_s, int(paused), now_s, name))

    def remove(self, name: str) -> None:
        self.get(name)
        with self._tx() as db:
            for table in ("schedules", "schedule_inputs", "schedule_fires"):
                db.execute(f"DELETE FROM {table} WHERE name=?", (name,))

    # -- watched inputs -----------------------------------------------------------------------
    def fingerprints(self, name: str) -> dict[str, Fingerprint]:
        rows = self._conn().execute("SELECT ref, meta, digest FROM schedule_inputs WHERE name=?", (name,))
        return {r["ref"]: Fingerprint(r["meta"], r["digest"]) for r in rows}

    def watched_uri(self, name: str, ref: str) -> str | None:
        row = self._conn().execute("SELECT uri FROM schedule_inputs WHERE name=? AND ref=?", (name, ref)).fetchone()
        return str(row["uri"]) if row else None

    def save_fingerprint(self, owner: str | None, name: str, ref: str, uri: str, fp: Fingerprint, now_s: float,
                         change: str | None = None) -> bool:
        """Store what was seen (and mark a pending change) — only while holding the lease, if owner is given."""
        with self._tx() as db:
            if owner is not None and not _holds(db, owner, now_s):
                return False
            db.execute("INSERT OR REPLACE INTO schedule_inputs VALUES (?,?,?,?,?,?)",
                       (name, ref, uri, fp.meta, fp.digest, now_s))
            if change:
                db.execute("UPDATE schedules SET pending_change = CASE WHEN pending_change IS NULL THEN ? "
                           "ELSE pending_change || '; ' || ? END WHERE name=?", (change, change, name))
        return True

    # -- fires --------------------------------------------------------------------------------
    def claim(self, owner: str | None, name: str, fires: tuple[Fire, ...], watermark_s: float | None,
              now_s: float) -> list[FireRow]:
        """Record ``fires`` and move the watermark in one transaction; [] when the lease is not ours."""
        with self._tx() as db:
            if owner is not None and not _holds(db, owner, now_s):
                return []
            claimed = []
            for fire in fires:
                run_id = run_id_for(name, fire, now_s)
                cur = db.execute("INSERT OR IGNORE INTO schedule_fires (name, fire_key, run_id, reason, tick_at, "
                                 "claimed_at, owner, state) VALUES (?,?,?,?,?,?,?, 'claimed')",
                                 (name, fire.key, run_id, fire.reason, fire.tick_s, now_s, owner or "cli"))
                if cur.rowcount:
                    claimed.append(fire)
            if watermark_s is not None:
                db.execute("UPDATE schedules SET watermark_at=MAX(watermark_at, ?) WHERE name=?", (watermark_s, name))
            if any(f.serves_change for f in fires):
                db.execute("UPDATE schedules SET pending_change=NULL WHERE name=?", (name,))
        return [self.fire(name, f.key) for f in claimed]

    def fire(self, name: str, key: str) -> FireRow:
        row = self._conn().execute("SELECT * FROM schedule_fires WHERE name=? AND fire_key=?", (name, key)).fetchone()
        return FireRow(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row iterates values

    def fires(self, name: str | None = None, *, open_only: bool = False, limit: int = 1000) -> list[FireRow]:
        where = [w for w in ("name=?" if name else "", "state != 'ended'" if open_only else "") if w]
        query = "SELECT * FROM schedule_fires" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._conn().execute(query + " ORDER BY claimed_at DESC LIMIT ?", (*([name] if name else []), limit))
        return [FireRow(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118

    def mark_started(self, name: str, key: str, pid: int, log_path: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE schedule_fires SET state='started', pid=?, log_path=? WHERE name=? AND fire_key=?",
                       (pid, log_path, name, key))

    def mark_ended(self, name: str, key: str, outcome: str, now_s: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE schedule_fires SET state='ended', outcome=?, ended_at=? WHERE name=? AND fire_key=?",
                       (outcome, now_s, name, key))

    # -- the lease ----------------------------------------------------------------------------
    def acquire_lease(self, owner: str, pid: int, host: str, now_s: float, ttl_s: float) -> bool:
        """Take or renew the one scheduler lease; False while another live scheduler holds it."""
        with self._tx() as db:
            row = db.execute("SELECT owner, expires_at FROM scheduler_lease WHERE id=1").fetchone()
            if row and row["owner"] not in (None, owner) and row["expires_at"] > now_s:
                return False
            acquired = now_s if not row or row["owner"] != owner else None
            db.execute("INSERT INTO scheduler_lease VALUES (1,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET owner=?, "
                       "pid=?, host=?, acquired_at=COALESCE(?, acquired_at), expires_at=?",
                       (owner, pid, host, now_s, now_s + ttl_s, owner, pid, host, acquired, now_s + ttl_s))
        return True

    def release_lease(self, owner: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE scheduler_lease SET owner=NULL, expires_at=0 WHERE id=1 AND owner=?", (owner,))

    def lease(self) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM scheduler_lease WHERE id=1").fetchone()
        return dict(row) if row and row["owner"] else None


def _holds(db: sqlite3.Connection, owner: str, now_s: float) -> bool:
    row = db.execute("SELECT owner, expires_at FROM scheduler_lease WHERE id=1").fetchone()
    return bool(row) and row["owner"] == owner and row["expires_at"] > now_s


def _record(row: sqlite3.Row) -> ScheduleRecord:
    return ScheduleRecord(name=row["name"], target=row["target"], pipeline=row["pipeline"], cron=row["cron"],
                          timezone=row["timezone"],
                          on_change=tuple((r, u) for r, u in json.loads(row["on_change_json"])),
                          concurrency=row["concurrency"], catchup=row["catchup"],
                          params=json.loads(row["params_json"]), run_args=tuple(json.loads(row["run_args_json"])),
                          paused=bool(row["paused"]), created_at=row["created_at"], watermark_at=row["watermark_at"],
                          pending_change=row["pending_change"])
