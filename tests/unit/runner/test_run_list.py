"""`skyflow runs`' listing read straight from the state DB: one exact summary per run, newest first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from skyflow.errors import RunError
from skyflow.runner.run_list import RunSummary, recent_runs
from skyflow.runner.state import RunStore


def test_the_newest_runs_with_their_stages_done_and_costs(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = RunStore(db)
    store.create_run("a-1", "alpha", "a.yaml", "d", {}, {}, None, ["prep", "train", "eval"], 12.5)
    store.create_run("b-1", "beta", "b.yaml", "d", {}, {}, None, ["only"], None)
    store.create_run("a-2", "alpha", "a.yaml", "d", {}, {}, None, ["prep", "train"], 3.0)
    for stage, state in (("prep", "succeeded"), ("train", "cached"), ("eval", "failed")):
        store.set_stage("a-1", stage, state=state)
    store.set_stage("a-2", "prep", state="running")
    store.set_run("a-1", state="failed", actual_usd=1.25)
    with sqlite3.connect(db) as conn:  # creation times a second apart, for a fixed order
        for run_id, created in (("a-1", 100.0), ("b-1", 200.0), ("a-2", 300.0)):
            conn.execute("UPDATE runs SET created_at=? WHERE run_id=?", (created, run_id))

    assert recent_runs(db) == [
        RunSummary("a-2", "alpha", "running", 300.0, 3.0, None, stages_done=0, stages=2),
        RunSummary("b-1", "beta", "running", 200.0, None, None, stages_done=0, stages=1),
        RunSummary("a-1", "alpha", "failed", 100.0, 12.5, 1.25, stages_done=2, stages=3),
    ]
    assert [r.run_id for r in recent_runs(db, limit=2)] == ["a-2", "b-1"]
    assert [r.run_id for r in recent_runs(db, pipeline="alpha")] == ["a-2", "a-1"]
    assert [r.run_id for r in recent_runs(db, pipeline="alpha", limit=1)] == ["a-2"]
    assert recent_runs(db, pipeline="gamma") == []


def test_twenty_runs_by_default(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = RunStore(db)
    for i in range(21):
        store.create_run(f"r-{i}", "p", "p.yaml", "d", {}, {}, None, [], None)
    assert len(recent_runs(db)) == 20


def test_a_damaged_state_db_is_a_run_error(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(RunError):
        recent_runs(db)


def test_a_home_without_a_state_db_lists_nothing_and_gets_one(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert recent_runs(db) == []
    assert db.is_file()
    assert recent_runs(db) == []
