"""RunStore on its own: migrating an old state DB, refusing a duplicate run id, sending a damaged output's
stage back, the history that prices plans, and what gc must keep for a run that is still running."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from skyflow.artifacts.record import ArtifactRecord
from skyflow.errors import RunError
from skyflow.runner.state import RunStore

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64

OLD_SCHEMA = """
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, target TEXT NOT NULL, pipeline_digest TEXT NOT NULL,
  overrides_json TEXT NOT NULL, options_json TEXT NOT NULL, plan_json TEXT, state TEXT NOT NULL,
  runner_pid INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL, ended_at REAL,
  estimated_usd REAL, actual_usd REAL
);
CREATE TABLE stages (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  infra TEXT, accelerator TEXT, hourly_usd REAL, num_nodes INTEGER, estimated_usd REAL, cost_usd REAL,
  egress_gb REAL, egress_usd REAL, cache_key TEXT, started_at REAL, ended_at REAL, duration_s REAL,
  message TEXT, log_path TEXT, process_groups TEXT, PRIMARY KEY (run_id, stage)
);
CREATE TABLE outputs (
  run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, uri TEXT NOT NULL, digest TEXT NOT NULL,
  size_bytes INTEGER NOT NULL, PRIMARY KEY (run_id, stage, name)
);
INSERT INTO runs VALUES ('old', 'p', 'p.yaml', 'd', '{}', '{}', NULL, 'succeeded', NULL, 1, 1, 2, NULL, NULL);
INSERT INTO stages (run_id, stage, state) VALUES ('old', 'prep', 'succeeded');
"""


def record(name: str, digest: str, size: int = 10) -> ArtifactRecord:
    return ArtifactRecord(name=name, uri=f"/store/manifests/{digest}.json", digest=digest, size_bytes=size,
                          store_uri="/store", file_count=1)


def new_run(store: RunStore, run_id: str, stages: list[str], pipeline: str = "p") -> None:
    store.create_run(run_id, pipeline, f"{pipeline}.yaml", "digest", {}, {}, None, stages, None)


def finished(store: RunStore, run_id: str, stage: str, outputs: dict[str, ArtifactRecord], **fields: object) -> None:
    store.finish_stage(run_id, stage, "succeeded", outputs, **fields)


def test_an_old_state_db_gains_the_new_columns_and_keeps_its_outputs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO outputs VALUES ('old', 'prep', 'rows', ?, ?, 7)",
                     (f"s3://bucket/pre/manifests/{DIGEST_A}.json", DIGEST_A))
        conn.execute("INSERT INTO outputs VALUES ('old', 'prep', 'raw', '/data/raw', ?, 3)", (DIGEST_B,))
    run = RunStore(path).get_run("old")
    prep = run.stages["prep"]
    assert prep.heals == 0 and prep.endpoint is None and prep.work_key is None and run.runner_start is None
    assert prep.outputs["rows"].store_uri == "s3://bucket/pre"  # read back from its manifest's URI
    assert prep.outputs["raw"].store_uri is None and prep.outputs["raw"].file_count is None
    RunStore(path)  # opening it again changes nothing


class _SeesNoColumns:
    """A connection that reports a table without the new columns although another process just added them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str) -> sqlite3.Cursor:
        if sql == "PRAGMA table_info(stages)":
            return self.conn.execute("SELECT 0 WHERE 0")
        return self.conn.execute(sql)


def test_a_column_another_process_added_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    with sqlite3.connect(store.path, isolation_level=None) as conn:
        RunStore._migrate(_SeesNoColumns(conn))  # type: ignore[arg-type]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(stages)")]
    assert columns.count("heals") == 1


def test_a_migration_failure_that_is_no_race_is_raised(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "empty.db", isolation_level=None) as conn, \
            pytest.raises(sqlite3.OperationalError, match="no such table: stages"):
        RunStore._migrate(conn)


def test_a_run_id_in_use_is_refused_with_the_way_out(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    new_run(store, "r1", ["a"])
    with pytest.raises(RunError, match=r"a run named 'r1' exists already; pick another --run-id or "
                                       r"`skyflow resume r1`"):
        new_run(store, "r1", ["b"])
    assert list(store.get_run("r1").stages) == ["a"]


def test_set_run_stores_a_plan_and_keeps_the_runner_it_is_not_told_about(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    new_run(store, "r1", ["a"])
    runner_start = store.get_run("r1").runner_start
    store.set_run("r1", plan={"pipeline": "p", "stages": {}}, state="failed")
    run = store.get_run("r1")
    assert run.plan == {"pipeline": "p", "stages": {}} and run.state == "failed"
    assert run.runner_start == runner_start is not None


def test_an_unknown_stage_is_named_in_the_error(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    new_run(store, "r1", ["a"])
    with pytest.raises(RunError, match=r"no stage 'b' in run 'r1'"):
        store.get_stage("r1", "b")


def test_a_damaged_output_sends_its_stage_back_until_the_limit(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    new_run(store, "r1", ["prep", "train"])
    finished(store, "r1", "prep", {"rows": record("rows", DIGEST_A)}, duration_s=5.0)
    # another digest than the one recorded, or a stage still running: someone reset it already
    assert store.reset_for_heal("r1", "prep", "rows", DIGEST_B, "damaged", limit=2) == "pending"
    assert store.reset_for_heal("r1", "train", "model", DIGEST_A, "damaged", limit=2) == "pending"
    assert store.reset_for_heal("r1", "prep", "rows", DIGEST_A, "rows was damaged", limit=2) == "reset"
    prep = store.get_stage("r1", "prep")
    assert (prep.state, prep.heals, prep.outputs, prep.message, prep.duration_s) == \
        ("pending", 1, {}, "rows was damaged", None)
    assert store.reset_for_heal("r1", "prep", "rows", DIGEST_A, "again", limit=2) == "pending"  # not finished
    finished(store, "r1", "prep", {"rows": record("rows", DIGEST_A)})
    assert store.reset_for_heal("r1", "prep", "rows", DIGEST_A, "again", limit=1) == "exhausted"
    assert store.get_stage("r1", "prep").state == "succeeded"  # left as it was
    store.reset_heals("r1")
    assert store.reset_for_heal("r1", "prep", "rows", DIGEST_A, "again", limit=1) == "reset"


def test_history_counts_only_the_same_work_of_the_same_stage(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    assert store.history("p", {}) == ({}, {})
    new_run(store, "r1", ["a", "b"])
    finished(store, "r1", "a", {"out": record("out", DIGEST_A, size=2_000_000_000)}, work_key="k-a",
             duration_s=7200.0, infra="local")
    # stage b did the work stage a is asked about: the pair (stage, work) must match, not the key alone
    finished(store, "r1", "b", {"out": record("out", DIGEST_B, size=1_000_000_000)}, work_key="k-a",
             duration_s=3600.0, infra="aws/us-east-1", accelerator="H100")
    hours, sizes = store.history("p", {"a": "k-a", "b": "k-b"})
    assert hours == {"a": {"local": [2.0]}}
    assert sizes == {"a.out": [2.0]}
    hours, _ = store.history("p", {"b": "k-a"})
    assert hours == {"b": {"H100": [1.0]}}


def test_gc_keeps_what_a_running_run_moved_in_or_imported(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    new_run(store, "live", ["train"])
    store.record_transfer("live", "train", f"rows={DIGEST_A}", 10, 0.1)
    store.record_transfer("live", "train", f"import raw={DIGEST_B}", 10, 0.1)
    store.record_transfer("live", "train", "notes=unknown", 10, 0.1)
    new_run(store, "done", ["train"], pipeline="q")
    store.record_transfer("done", "train", f"rows={DIGEST_C}", 10, 0.1)
    store.set_run("done", state="succeeded")
    assert store.referenced_digests(keep_last=0) == {DIGEST_A, DIGEST_B}
