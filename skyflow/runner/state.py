"""Run state in SQLite: runs, stages, attempts, outputs, transfers. Safe for several processes."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.errors import RunError
from skyflow.home import skyflow_home
from skyflow.planner.policy import LOCAL
from skyflow.processes import group_is_ours, process_start
from skyflow.statedb import StateDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, target TEXT NOT NULL, pipeline_digest TEXT NOT NULL,
  overrides_json TEXT NOT NULL, options_json TEXT NOT NULL, plan_json TEXT, state TEXT NOT NULL,
  runner_pid INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL, ended_at REAL,
  estimated_usd REAL, actual_usd REAL
);
CREATE TABLE IF NOT EXISTS stages (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  infra TEXT, accelerator TEXT, hourly_usd REAL, num_nodes INTEGER, estimated_usd REAL, cost_usd REAL,
  egress_gb REAL, egress_usd REAL, cache_key TEXT, started_at REAL, ended_at REAL, duration_s REAL,
  message TEXT, log_path TEXT, process_groups TEXT, endpoint TEXT,
  PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS attempts (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, attempt INTEGER NOT NULL, started_at REAL NOT NULL,
  ended_at REAL, exit_code INTEGER, reason TEXT, PRIMARY KEY (run_id, stage, attempt)
);
CREATE TABLE IF NOT EXISTS outputs (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, uri TEXT NOT NULL, digest TEXT NOT NULL,
  size_bytes INTEGER NOT NULL, store_uri TEXT, file_count INTEGER, PRIMARY KEY (run_id, stage, name)
);
CREATE TABLE IF NOT EXISTS transfers (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, artifact TEXT NOT NULL, bytes INTEGER NOT NULL,
  seconds REAL NOT NULL, egress_usd REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS stages_by_name ON stages (stage, state);
"""

# How often stage updates refresh the run's updated_at (seconds; see RunStore.set_stage).
RUN_TOUCH_EVERY_S = 1.0

# The history key of durations measured on this machine (see RunStore.history): the planner's name for it.
HISTORY_LOCAL = LOCAL


@dataclass(frozen=True)
class StageRow:
    stage: str
    state: str
    attempts: int
    infra: str | None
    accelerator: str | None
    hourly_usd: float | None
    num_nodes: int | None
    estimated_usd: float | None
    cost_usd: float | None
    egress_gb: float | None
    egress_usd: float | None
    cache_key: str | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    message: str | None
    log_path: str | None
    process_groups: list[int] = field(default_factory=list)
    endpoint: str | None = None
    # JSON a remote backend wrote to find what an attempt or service created (Job names, sky service).
    remote_handle: str | None = None
    outputs: dict[str, ArtifactRecord] = field(default_factory=dict)
    # Times this stage was reset in this run because an output of it was found damaged in its store.
    heals: int = 0
    # What work the stage did (skyflow.spec.work.work_key): past durations of the same work price plans.
    work_key: str | None = None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    pipeline: str
    target: str
    pipeline_digest: str
    overrides: dict[str, Any]
    options: dict[str, Any]
    plan: dict[str, Any] | None
    state: str
    runner_pid: int | None
    created_at: float
    updated_at: float
    ended_at: float | None
    estimated_usd: float | None
    actual_usd: float | None
    stages: dict[str, StageRow] = field(default_factory=dict)
    # The runner's `processes.process_start`, recorded with its pid: a reused pid is not the runner.
    runner_start: str | None = None


def _record(row: sqlite3.Row) -> ArtifactRecord:
    return ArtifactRecord(name=row["name"], uri=row["uri"], digest=row["digest"], size_bytes=row["size_bytes"],
                          store_uri=row["store_uri"], file_count=row["file_count"])


class RunStore(StateDB):
    """The state DB (WAL, busy timeout), shared by runners, `skyflow status` and the scheduler."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or skyflow_home() / "state.db", SCHEMA, error=RunError)
        self._migrate(self._conn())

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Columns added after a state DB was made are added in place (old runs keep working)."""
        added = (("stages", "endpoint", "TEXT"), ("stages", "remote_handle", "TEXT"),
                 ("stages", "group_starts", "TEXT"), ("stages", "heals", "INTEGER NOT NULL DEFAULT 0"),
                 ("runs", "runner_start", "TEXT"), ("stages", "work_key", "TEXT"))
        for table, column, kind in added:
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise
        have = {row[1] for row in conn.execute("PRAGMA table_info(outputs)")}
        if "store_uri" not in have:
            conn.execute("ALTER TABLE outputs ADD COLUMN store_uri TEXT")
            conn.execute("ALTER TABLE outputs ADD COLUMN file_count INTEGER")
            # Outputs recorded before the store was kept: their manifest URI is <store>/manifests/...
            conn.execute("UPDATE outputs SET store_uri = substr(uri, 1, instr(uri, '/manifests/') - 1) "
                         "WHERE instr(uri, '/manifests/') > 0")

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, run_id: str, pipeline: str, target: str, digest: str, overrides: dict[str, Any],
                   options: dict[str, Any], plan: dict[str, Any] | None, stages: list[str],
                   estimated_usd: float | None) -> None:
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                raise RunError(f"a run named {run_id!r} exists already; pick another --run-id or "
                               f"`skyflow resume {run_id}`")
            db.execute("INSERT INTO runs (run_id, pipeline, target, pipeline_digest, overrides_json, options_json, "
                       "plan_json, state, runner_pid, runner_start, created_at, updated_at, estimated_usd) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (run_id, pipeline, target, digest, json.dumps(overrides), json.dumps(options),
                        json.dumps(plan) if plan else None, "running", os.getpid(), process_start(os.getpid()),
                        now, now, estimated_usd))
            db.executemany("INSERT INTO stages (run_id, stage, state) VALUES (?,?,?)",
                           [(run_id, s, "pending") for s in stages])

    def set_run(self, run_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        if "runner_pid" in fields:  # a pid is recorded with its start time, which a reused pid does not share
            fields["runner_start"] = process_start(fields["runner_pid"])
        if "plan" in fields:
            fields["plan_json"] = json.dumps(fields.pop("plan"))
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE run_id=?", (*fields.values(), run_id))

    def set_stage(self, run_id: str, stage: str, **fields: Any) -> None:
        if "process_groups" in fields:
            fields.update(_groups_with_starts(fields["process_groups"]))
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE stages SET {cols} WHERE run_id=? AND stage=?", (*fields.values(), run_id, stage))
            # The runs row holds the plan (megabytes for 10,000 stages), and updating any column rewrites
            # it whole: a stage's step touches it at most once a second, not at every step.
            now = time.time()
            db.execute("UPDATE runs SET updated_at=? WHERE run_id=? AND updated_at<?",
                       (now, run_id, now - RUN_TOUCH_EVERY_S))

    def start_attempt(self, run_id: str, stage: str, attempt: int, log_path: str) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO attempts (run_id, stage, attempt, started_at) VALUES (?,?,?,?)",
                       (run_id, stage, attempt, now))
            db.execute("UPDATE stages SET state='running', attempts=?, log_path=?, started_at=COALESCE(started_at, ?) "
                       "WHERE run_id=? AND stage=?", (attempt, log_path, now, run_id, stage))

    def end_attempt(self, run_id: str, stage: str, attempt: int, exit_code: int, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE attempts SET ended_at=?, exit_code=?, reason=? WHERE run_id=? AND stage=? "
                       "AND attempt=?", (time.time(), exit_code, reason, run_id, stage, attempt))

    def finish_stage(self, run_id: str, stage: str, state: str, outputs: dict[str, ArtifactRecord],
                     **fields: Any) -> None:
        """Outputs and the final state in one transaction: a stage is done only with its outputs."""
        with self._tx() as db:
            db.execute("DELETE FROM outputs WHERE run_id=? AND stage=?", (run_id, stage))
            db.executemany("INSERT INTO outputs (run_id, stage, name, uri, digest, size_bytes, store_uri, file_count) "
                           "VALUES (?,?,?,?,?,?,?,?)",
                           [(run_id, stage, o.name, o.uri, o.digest, o.size_bytes or 0, o.store_uri, o.file_count)
                            for o in outputs.values()])
            fields.update(_groups_with_starts(fields.get("process_groups", [])))
            fields.update(state=state, ended_at=time.time())
            cols = ", ".join(f"{k}=?" for k in fields)
            db.execute(f"UPDATE stages SET {cols} WHERE run_id=? AND stage=?", (*fields.values(), run_id, stage))

    def claim_runner(self, run_id: str, seen_pid: int | None, seen_start: str | None) -> bool:
        """Make this process the run's runner, if the runner is still the one seen (pid and start time):
        of several processes that saw the same dead runner, exactly one gets the run."""
        with self._tx() as db:
            cursor = db.execute("UPDATE runs SET runner_pid=?, runner_start=?, updated_at=? WHERE run_id=? "
                                "AND runner_pid IS ? AND runner_start IS ?",
                                (os.getpid(), process_start(os.getpid()), time.time(), run_id, seen_pid, seen_start))
            return cursor.rowcount == 1

    def reset_for_heal(self, run_id: str, stage: str, output: str, digest: str, reason: str, *,
                       limit: int) -> str:
        """Send a finished stage back to pending because its output ``output`` (``digest``) was found
        damaged, so that the run loop runs it again. "reset" when done now; "pending" when it is no
        longer finished with that output (another consumer reset it already); "exhausted" when it was
        reset ``limit`` times in this run already (the store keeps damaging what is written to it)."""
        with self._tx() as db:
            row = db.execute("SELECT state, heals FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone()
            out = db.execute("SELECT digest FROM outputs WHERE run_id=? AND stage=? AND name=?",
                             (run_id, stage, output)).fetchone()
            if row is None or row["state"] not in ("succeeded", "cached") or out is None or out["digest"] != digest:
                return "pending"
            if row["heals"] >= limit:
                return "exhausted"
            db.execute("DELETE FROM outputs WHERE run_id=? AND stage=?", (run_id, stage))
            db.execute("UPDATE stages SET state='pending', heals=heals+1, message=?, started_at=NULL, ended_at=NULL, "
                       "duration_s=NULL WHERE run_id=? AND stage=?", (reason, run_id, stage))
            db.execute("UPDATE runs SET updated_at=? WHERE run_id=?", (time.time(), run_id))
            return "reset"

    def reset_heals(self, run_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE stages SET heals=0 WHERE run_id=?", (run_id,))

    def record_transfer(self, run_id: str, stage: str, artifact: str, size_bytes: int, seconds: float,
                        egress_usd: float = 0.0) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO transfers VALUES (?,?,?,?,?,?)",
                       (run_id, stage, artifact, size_bytes, seconds, egress_usd))

    # -- reads --------------------------------------------------------------------------------
    def stage_egress(self, run_id: str, stage: str) -> tuple[float, float]:
        """GB moved into the stage at a price in this run, and what they cost (USD)."""
        row = self._conn().execute("SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(egress_usd), 0) FROM transfers "
                                   "WHERE run_id=? AND stage=? AND egress_usd > 0", (run_id, stage)).fetchone()
        return row[0] / 1e9, float(row[1])

    def egress_usd(self, run_id: str) -> float:
        """What the data moved in this run cost, over every transfer."""
        row = self._conn().execute("SELECT COALESCE(SUM(egress_usd), 0) FROM transfers WHERE run_id=?",
                                   (run_id,)).fetchone()
        return float(row[0])

    def has_run(self, run_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

    def get_run(self, run_id: str) -> RunRow:
        db = self._conn()
        row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            from skyflow.matching import close_matches

            ids = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 200")]
            matches = close_matches(run_id, ids)
            hint = f" Did you mean {', '.join(matches)}?" if matches else " See `skyflow runs`."
            raise RunError(f"no run {run_id!r} in {self.path}.{hint}")
        outputs: dict[str, dict[str, ArtifactRecord]] = {}
        for o in db.execute("SELECT * FROM outputs WHERE run_id=?", (run_id,)):
            outputs.setdefault(o["stage"], {})[o["name"]] = _record(o)
        stages = {s["stage"]: _stage_row(s, outputs.get(s["stage"], {}))
                  for s in db.execute("SELECT * FROM stages WHERE run_id=? ORDER BY rowid", (run_id,))}
        return RunRow(run_id=row["run_id"], pipeline=row["pipeline"], target=row["target"],
                      pipeline_digest=row["pipeline_digest"], overrides=json.loads(row["overrides_json"]),
                      options=json.loads(row["options_json"]),
                      plan=json.loads(row["plan_json"]) if row["plan_json"] else None, state=row["state"],
                      runner_pid=row["runner_pid"], created_at=row["created_at"], updated_at=row["updated_at"],
                      ended_at=row["ended_at"], estimated_usd=row["estimated_usd"], actual_usd=row["actual_usd"],
                      stages=stages, runner_start=row["runner_start"])

    def get_stage(self, run_id: str, stage: str) -> StageRow:
        """One stage's row and outputs: what the run loop reads per stage, without the whole run."""
        db = self._conn()
        row = db.execute("SELECT * FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone()
        if row is None:
            raise RunError(f"no stage {stage!r} in run {run_id!r}")
        found = db.execute("SELECT * FROM outputs WHERE run_id=? AND stage=?", (run_id, stage))
        return _stage_row(row, {o["name"]: _record(o) for o in found})

    def stage_states(self, run_id: str) -> dict[str, str]:
        """Each stage's state, in pipeline order: the run loop's one whole-run read at start."""
        rows = self._conn().execute("SELECT stage, state FROM stages WHERE run_id=? ORDER BY rowid", (run_id,))
        return {r["stage"]: r["state"] for r in rows}

    def list_runs(self, limit: int = 20, pipeline: str | None = None) -> list[RunRow]:
        query = "SELECT run_id FROM runs" + (" WHERE pipeline=?" if pipeline else "") + \
            " ORDER BY created_at DESC LIMIT ?"
        args: tuple[Any, ...] = (pipeline, limit) if pipeline else (limit,)
        return [self.get_run(r[0]) for r in self._conn().execute(query, args)]

    def history(self, pipeline: str, work_keys: Mapping[str, str]
                ) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]]]:
        """Past durations (hours) and output sizes (GB) of the successful runs of stages of ``pipeline``
        that did the same work (``work_keys``: stage name -> `skyflow.spec.work.work_key`). Hours are
        keyed by where they were measured: ``"local"`` for this machine, else the accelerator name
        (``"default"`` for none), so that a run on a laptop never prices a cloud machine."""
        hours: dict[str, dict[str, list[float]]] = {}
        sizes: dict[str, list[float]] = {}
        if not work_keys:
            return hours, sizes
        db = self._conn()
        wanted = set(work_keys.items())
        marks = ",".join("?" * len(work_keys))
        rows = db.execute(f"SELECT s.stage, s.work_key, s.infra, s.accelerator, s.duration_s FROM stages s JOIN runs r "
                          f"ON r.run_id=s.run_id WHERE r.pipeline=? AND s.state='succeeded' AND s.duration_s IS NOT "
                          f"NULL AND s.work_key IN ({marks})", (pipeline, *work_keys.values()))
        for r in rows:
            if (r["stage"], r["work_key"]) in wanted:
                where = HISTORY_LOCAL if r["infra"] == HISTORY_LOCAL else (r["accelerator"] or "default")
                hours.setdefault(r["stage"], {}).setdefault(where, []).append(r["duration_s"] / 3600)
        rows = db.execute(f"SELECT o.stage, o.name, o.size_bytes, s.work_key FROM outputs o JOIN stages s ON "
                          f"o.run_id=s.run_id AND o.stage=s.stage JOIN runs r ON r.run_id=s.run_id WHERE r.pipeline=? "
                          f"AND s.state='succeeded' AND s.work_key IN ({marks})", (pipeline, *work_keys.values()))
        for r in rows:
            if (r["stage"], r["work_key"]) in wanted:
                sizes.setdefault(f"{r['stage']}.{r['name']}", []).append(r["size_bytes"] / 1e9)
        return hours, sizes

    def outputs_for_cache_key(self, key: str) -> dict[str, ArtifactRecord] | None:
        """The outputs of the newest finished stage run with this cache key, in whatever store."""
        db = self._conn()
        row = db.execute("SELECT run_id, stage FROM stages WHERE cache_key=? AND state IN ('succeeded', 'cached') "
                         "ORDER BY ended_at DESC LIMIT 1", (key,)).fetchone()
        if row is None:
            return None
        found = db.execute("SELECT * FROM outputs WHERE run_id=? AND stage=?", (row[0], row[1]))
        return {o["name"]: _record(o) for o in found}

    def referenced_digests(self, keep_last: int) -> set[str]:
        """What gc must keep: the output digests of the newest ``keep_last`` runs of each pipeline, and
        everything a run still running uses (its outputs so far, the inputs it imported or moved in),
        however old it is. A run left "running" by a dead runner counts: it can still be resumed."""
        db = self._conn()
        keep = set()
        for (pipeline,) in db.execute("SELECT DISTINCT pipeline FROM runs"):
            ids = [r[0] for r in db.execute("SELECT run_id FROM runs WHERE pipeline=? ORDER BY created_at DESC "
                                            "LIMIT ?", (pipeline, keep_last))]
            marks = ",".join("?" * len(ids))
            keep |= {r[0] for r in db.execute(f"SELECT digest FROM outputs WHERE run_id IN ({marks})", ids)}
        live = "SELECT run_id FROM runs WHERE state='running'"
        keep |= {r[0] for r in db.execute(f"SELECT digest FROM outputs WHERE run_id IN ({live})")}
        for (artifact,) in db.execute(f"SELECT artifact FROM transfers WHERE run_id IN ({live})"):
            digest = artifact.rpartition("=")[2]  # "input=sha256:..." or "import raw=sha256:..."
            if digest.startswith("sha256:"):
                keep.add(digest)
        return keep


def _stage_row(row: sqlite3.Row, outputs: dict[str, ArtifactRecord]) -> StageRow:
    data = {k: row[k] for k in row.keys() if k not in ("run_id", "group_starts")}  # noqa: SIM118
    data["process_groups"] = _own_groups(row["process_groups"], row["group_starts"])
    return StageRow(**data, outputs=outputs)


def _groups_with_starts(groups: list[int]) -> dict[str, str]:
    """The columns for a stage's process groups: their ids, and each leader's start time beside it."""
    return {"process_groups": json.dumps(groups), "group_starts": json.dumps([process_start(g) for g in groups])}


def _own_groups(groups_json: str | None, starts_json: str | None) -> list[int]:
    """The recorded process groups that are still the groups recorded: one whose id now names
    another process (the runner died and the number was reused) is not listed, so nothing that
    reads run state can signal it. Groups recorded before start times were kept are listed as they are."""
    groups = json.loads(groups_json or "[]")
    if starts_json is None:
        return [int(g) for g in groups]
    starts = json.loads(starts_json)
    return [int(g) for g, start in zip(groups, starts, strict=False) if group_is_ours(int(g), start)]
