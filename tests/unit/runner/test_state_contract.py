"""RunStore's whole contract on a real state DB: the rows a new run starts with, what each write changes
(and what it leaves alone), attempts, outputs and transfers, the runner claim, process groups that are
still ours, the reads (`get_run`, `get_stage`, `stage_states`, `list_runs`, `history`,
`outputs_for_cache_key`) and what gc must keep. Time is a fixed clock, so every timestamp is exact."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts.record import ArtifactRecord
from skyflow.errors import RunError
from skyflow.processes import process_start
from skyflow.runner import state as state_module
from skyflow.runner.state import RunRow, RunStore, StageRow

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64
F = "sha256:" + "f" * 64
G = "sha256:" + "1" * 64
H = "sha256:" + "2" * 64


class Clock:
    """The time RunStore reads: set by the test, never moving on its own."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(1000.0)
    monkeypatch.setattr(state_module, "time", fixed)
    return fixed


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "state.db")


def pending(stage: str) -> StageRow:
    return StageRow(stage=stage, state="pending", attempts=0, infra=None, accelerator=None, hourly_usd=None,
                    num_nodes=None, estimated_usd=None, cost_usd=None, egress_gb=None, egress_usd=None,
                    cache_key=None, started_at=None, ended_at=None, duration_s=None, message=None, log_path=None)


def art(name: str, digest: str, size: int | None = 10, store_uri: str | None = "/store",
        files: int | None = 1) -> ArtifactRecord:
    return ArtifactRecord(name=name, uri=f"/store/manifests/sha256/{digest[7:]}.json", digest=digest,
                          size_bytes=size, store_uri=store_uri, file_count=files)


def new_run(store: RunStore, run_id: str, stages: list[str], pipeline: str = "p") -> None:
    store.create_run(run_id, pipeline, f"{pipeline}.yaml", "digest", {}, {}, None, stages, None)


def rows(store: RunStore, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(store.path)) as conn:
        return conn.execute(sql, args).fetchall()


def columns(store: RunStore, table: str) -> list[tuple[Any, ...]]:
    """(name, type, not null, default) of each column, in table order."""
    return [(r[1], r[2], r[3], r[4]) for r in rows(store, f"PRAGMA table_info({table})")]


# -- opening --------------------------------------------------------------------------------------

def test_without_a_path_the_state_db_is_in_the_skyflow_home(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path / "home"))
    store = RunStore()
    assert store.path == tmp_path / "home" / "state.db"
    new_run(store, "r1", ["a"])
    assert RunStore(tmp_path / "home" / "state.db").has_run("r1")


def test_a_file_that_is_no_state_db_is_a_run_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(RunError, match=re.escape(f"the state DB {path} cannot be read: ")):
        RunStore(path)


STAGE_COLUMNS = [
    ("run_id", "TEXT", 1, None), ("stage", "TEXT", 1, None), ("state", "TEXT", 1, None),
    ("attempts", "INTEGER", 1, "0"), ("infra", "TEXT", 0, None), ("accelerator", "TEXT", 0, None),
    ("hourly_usd", "REAL", 0, None), ("num_nodes", "INTEGER", 0, None), ("estimated_usd", "REAL", 0, None),
    ("cost_usd", "REAL", 0, None), ("egress_gb", "REAL", 0, None), ("egress_usd", "REAL", 0, None),
    ("cache_key", "TEXT", 0, None), ("started_at", "REAL", 0, None), ("ended_at", "REAL", 0, None),
    ("duration_s", "REAL", 0, None), ("message", "TEXT", 0, None), ("log_path", "TEXT", 0, None),
    ("process_groups", "TEXT", 0, None), ("endpoint", "TEXT", 0, None), ("remote_handle", "TEXT", 0, None),
    ("group_starts", "TEXT", 0, None), ("heals", "INTEGER", 1, "0"), ("work_key", "TEXT", 0, None)]
RUN_COLUMNS = [
    ("run_id", "TEXT", 0, None), ("pipeline", "TEXT", 1, None), ("target", "TEXT", 1, None),
    ("pipeline_digest", "TEXT", 1, None), ("overrides_json", "TEXT", 1, None), ("options_json", "TEXT", 1, None),
    ("plan_json", "TEXT", 0, None), ("state", "TEXT", 1, None), ("runner_pid", "INTEGER", 0, None),
    ("created_at", "REAL", 1, None), ("updated_at", "REAL", 1, None), ("ended_at", "REAL", 0, None),
    ("estimated_usd", "REAL", 0, None), ("actual_usd", "REAL", 0, None), ("runner_start", "TEXT", 0, None)]
OUTPUT_COLUMNS = [
    ("run_id", "TEXT", 1, None), ("stage", "TEXT", 1, None), ("name", "TEXT", 1, None), ("uri", "TEXT", 1, None),
    ("digest", "TEXT", 1, None), ("size_bytes", "INTEGER", 1, None), ("store_uri", "TEXT", 0, None),
    ("file_count", "INTEGER", 0, None)]

# A state DB made before process groups' start times, heals, work keys, endpoints and stores were kept.
OLD_TABLES = """
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
"""


def test_a_new_state_db_has_every_column_with_its_type(store: RunStore) -> None:
    assert columns(store, "stages") == STAGE_COLUMNS
    assert columns(store, "runs") == RUN_COLUMNS
    assert columns(store, "outputs") == OUTPUT_COLUMNS


def test_an_old_state_db_gains_every_new_column_with_its_type(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_TABLES)
        conn.execute("INSERT INTO outputs VALUES ('old', 'prep', 'rows', ?, ?, 7)",
                     (f"gs://bucket/runs/manifests/sha256/{A[7:]}.json", A))
    store = RunStore(path)
    assert columns(store, "stages") == STAGE_COLUMNS
    assert columns(store, "runs") == RUN_COLUMNS
    assert columns(store, "outputs") == OUTPUT_COLUMNS
    assert rows(store, "SELECT store_uri, file_count FROM outputs") == [("gs://bucket/runs", None)]


# -- runs -----------------------------------------------------------------------------------------

def test_a_new_run_is_running_under_this_process_with_every_stage_pending(store: RunStore, clock: Clock) -> None:
    store.create_run("r1", "p", "p.yaml", "dig", {"lr": 0.1}, {"retries": 2}, {"pipeline": "p"},
                     ["train", "prep"], 4.5)
    run = store.get_run("r1")
    assert run == RunRow(run_id="r1", pipeline="p", target="p.yaml", pipeline_digest="dig", overrides={"lr": 0.1},
                         options={"retries": 2}, plan={"pipeline": "p"}, state="running", runner_pid=os.getpid(),
                         created_at=1000.0, updated_at=1000.0, ended_at=None, estimated_usd=4.5, actual_usd=None,
                         stages={"train": pending("train"), "prep": pending("prep")},
                         runner_start=process_start(os.getpid()))
    assert run.runner_start is not None
    assert list(run.stages) == ["train", "prep"]  # pipeline order, not by name
    assert store.stage_states("r1") == {"train": "pending", "prep": "pending"}
    assert list(store.stage_states("r1")) == ["train", "prep"]


def test_a_run_without_a_plan_or_with_an_empty_one_has_none(store: RunStore) -> None:
    store.create_run("r1", "p", "p.yaml", "d", {}, {}, None, [], None)
    store.create_run("r2", "p", "p.yaml", "d", {}, {}, {}, [], None)
    assert (store.get_run("r1").plan, store.get_run("r2").plan) == (None, None)
    assert rows(store, "SELECT run_id, plan_json FROM runs ORDER BY run_id") == [("r1", None), ("r2", None)]


def test_has_run_tells_a_recorded_run_from_an_unknown_one(store: RunStore) -> None:
    new_run(store, "r1", [])
    assert store.has_run("r1") is True
    assert store.has_run("r2") is False


def test_set_run_changes_the_named_fields_of_that_run_only_and_stamps_it(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", ["a"])
    new_run(store, "r2", ["a"])
    before = store.get_run("r1")
    clock.now = 1010.0
    store.set_run("r1", state="succeeded", ended_at=1009.0, actual_usd=2.5)
    assert store.get_run("r1") == replace(before, state="succeeded", ended_at=1009.0, actual_usd=2.5,
                                          updated_at=1010.0)
    assert store.get_run("r2") == replace(before, run_id="r2")


def test_a_recorded_runner_pid_carries_that_process_start(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", [])
    parent = os.getppid()
    store.set_run("r1", runner_pid=parent)
    run = store.get_run("r1")
    assert (run.runner_pid, run.runner_start) == (parent, process_start(parent))
    assert run.runner_start is not None
    store.set_run("r1", runner_pid=None)
    run = store.get_run("r1")
    assert (run.runner_pid, run.runner_start) == (None, None)


def test_set_run_stores_the_plan_as_json(store: RunStore) -> None:
    new_run(store, "r1", [])
    store.set_run("r1", plan={"stages": {"a": {"hours": 1.5}}})
    assert store.get_run("r1").plan == {"stages": {"a": {"hours": 1.5}}}
    assert rows(store, "SELECT plan_json FROM runs") == [(json.dumps({"stages": {"a": {"hours": 1.5}}}),)]


# -- the runner claim -----------------------------------------------------------------------------

def test_exactly_one_claim_on_the_runner_seen_succeeds(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", [])
    new_run(store, "r2", [])
    mine = (os.getpid(), process_start(os.getpid()))
    # a runner that is not the one recorded: no claim
    assert store.claim_runner("r1", 1, "boot:1") is False
    assert (store.get_run("r1").runner_pid, store.get_run("r1").runner_start) == mine
    store.set_run("r1", runner_pid=None)
    store.set_run("r2", runner_pid=None)
    clock.now = 1100.0
    assert store.claim_runner("r1", None, None) is True
    run = store.get_run("r1")
    assert (run.runner_pid, run.runner_start, run.updated_at) == (*mine, 1100.0)
    # the others that saw the same (absent) runner find it taken
    assert store.claim_runner("r1", None, None) is False
    assert (store.get_run("r2").runner_pid, store.get_run("r2").runner_start) == (None, None)
    assert store.claim_runner("missing", None, None) is False


# -- stages ---------------------------------------------------------------------------------------

def test_set_stage_writes_its_fields_and_touches_the_run_at_most_once_a_second(store: RunStore,
                                                                                clock: Clock) -> None:
    new_run(store, "r1", ["a", "b"])
    clock.now = 900.0
    new_run(store, "r2", ["a"])
    clock.now = 1001.0  # exactly a second after the run was last updated: not touched yet
    store.set_stage("r1", "a", state="running", infra="local", num_nodes=2)
    assert store.get_run("r1").updated_at == 1000.0
    assert store.get_stage("r1", "a") == replace(pending("a"), state="running", infra="local", num_nodes=2)
    clock.now = 1001.5
    store.set_stage("r1", "a", message="halfway")
    assert store.get_run("r1").updated_at == 1001.5
    clock.now = 1002.0
    store.set_stage("r1", "a", message="later")
    assert store.get_run("r1").updated_at == 1001.5
    assert store.get_stage("r1", "a") == replace(pending("a"), state="running", infra="local", num_nodes=2,
                                                 message="later")
    assert store.get_stage("r1", "b") == pending("b")
    assert store.get_run("r2") == replace(store.get_run("r2"), updated_at=900.0)
    assert store.get_stage("r2", "a") == pending("a")


def test_attempts_are_recorded_and_the_stage_keeps_its_first_start(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", ["a", "b"])
    new_run(store, "r2", ["a"])
    clock.now = 1005.0
    store.start_attempt("r1", "a", 1, "/logs/a.1")
    assert store.get_stage("r1", "a") == replace(pending("a"), state="running", attempts=1, log_path="/logs/a.1",
                                                 started_at=1005.0)
    clock.now = 1010.0
    store.end_attempt("r1", "a", 1, 3, "exit 3")
    clock.now = 1020.0
    store.start_attempt("r1", "a", 2, "/logs/a.2")
    assert store.get_stage("r1", "a") == replace(pending("a"), state="running", attempts=2, log_path="/logs/a.2",
                                                 started_at=1005.0)
    clock.now = 1030.0
    store.end_attempt("r1", "a", 2, 0, "ok")
    clock.now = 1040.0
    store.start_attempt("r1", "a", 2, "/logs/a.2b")  # the same attempt again starts afresh
    assert rows(store, "SELECT * FROM attempts ORDER BY attempt") == [
        ("r1", "a", 1, 1005.0, 1010.0, 3, "exit 3"), ("r1", "a", 2, 1040.0, None, None, None)]
    assert store.get_stage("r1", "b") == pending("b")
    assert store.get_stage("r2", "a") == pending("a")


def test_ending_an_attempt_ends_that_attempt_only(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", ["a", "b"])
    new_run(store, "r2", ["a"])
    for run_id, stage in (("r1", "a"), ("r1", "b"), ("r2", "a")):
        store.start_attempt(run_id, stage, 1, "/log")
    store.start_attempt("r1", "a", 2, "/log")
    clock.now = 1050.0
    store.end_attempt("r1", "a", 1, 137, "killed")
    assert rows(store, "SELECT * FROM attempts ORDER BY run_id, stage, attempt") == [
        ("r1", "a", 1, 1000.0, 1050.0, 137, "killed"), ("r1", "a", 2, 1000.0, None, None, None),
        ("r1", "b", 1, 1000.0, None, None, None), ("r2", "a", 1, 1000.0, None, None, None)]


def test_finishing_a_stage_replaces_its_outputs_and_records_the_end(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", ["a", "b"])
    new_run(store, "r2", ["a"])
    store.finish_stage("r2", "a", "succeeded", {"rows": art("rows", C)})
    store.finish_stage("r1", "b", "succeeded", {"rows": art("rows", D)})
    clock.now = 1050.0
    unsized = art("rows", A, size=None, store_uri=None, files=None)
    store.finish_stage("r1", "a", "succeeded", {"rows": unsized, "model": art("model", B, size=99, files=4)},
                       duration_s=5.0, cost_usd=0.5)
    assert store.get_stage("r1", "a") == replace(
        pending("a"), state="succeeded", ended_at=1050.0, duration_s=5.0, cost_usd=0.5,
        outputs={"rows": replace(unsized, size_bytes=0), "model": art("model", B, size=99, files=4)})
    clock.now = 1060.0
    store.finish_stage("r1", "a", "failed", {"log": art("log", E)}, message="exit 1")
    assert store.get_stage("r1", "a") == replace(pending("a"), state="failed", ended_at=1060.0, duration_s=5.0,
                                                 cost_usd=0.5, message="exit 1", outputs={"log": art("log", E)})
    assert store.get_stage("r1", "b").outputs == {"rows": art("rows", D)}
    assert store.get_stage("r2", "a").outputs == {"rows": art("rows", C)}
    assert {name: stage.outputs for name, stage in store.get_run("r1").stages.items()} == {
        "a": {"log": art("log", E)}, "b": {"rows": art("rows", D)}}


def test_a_finished_stage_lists_only_the_process_groups_it_ends_with(store: RunStore) -> None:
    new_run(store, "r1", ["a"])
    group = os.getpgrp()
    store.set_stage("r1", "a", state="running", process_groups=[group])
    assert store.get_stage("r1", "a").process_groups == [group]
    store.finish_stage("r1", "a", "succeeded", {})
    assert store.get_stage("r1", "a").process_groups == []
    assert rows(store, "SELECT process_groups, group_starts FROM stages") == [("[]", "[]")]
    # a stage that ends with processes left running (a service) keeps them listed
    store.finish_stage("r1", "a", "succeeded", {}, process_groups=[group])
    assert store.get_stage("r1", "a").process_groups == [group]
    assert rows(store, "SELECT process_groups, group_starts FROM stages") == [
        (json.dumps([group]), json.dumps([process_start(group)]))]


def test_process_groups_are_listed_while_they_are_still_the_groups_recorded(store: RunStore) -> None:
    new_run(store, "r1", ["a"])
    ended = subprocess.Popen(["true"], start_new_session=True)
    ended.wait()
    live = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        start = process_start(live.pid)
        assert start is not None
        store.set_stage("r1", "a", process_groups=[live.pid, ended.pid])
        assert rows(store, "SELECT process_groups, group_starts FROM stages") == [
            (json.dumps([live.pid, ended.pid]), json.dumps([start, None]))]
        assert store.get_stage("r1", "a").process_groups == [live.pid]
        assert store.get_run("r1").stages["a"].process_groups == [live.pid]
        # the id now names another process than the leader recorded: not ours to signal
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("UPDATE stages SET group_starts=?", (json.dumps(["another-boot:1", None]),))
        assert store.get_stage("r1", "a").process_groups == []
        # recorded before start times were kept: listed as recorded
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("UPDATE stages SET group_starts=NULL")
        assert store.get_stage("r1", "a").process_groups == [live.pid, ended.pid]
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait()


def test_a_cached_stage_with_a_damaged_output_goes_back_to_pending_whole(store: RunStore, clock: Clock) -> None:
    new_run(store, "r1", ["a", "b"])
    store.start_attempt("r1", "a", 1, "/log")
    store.finish_stage("r1", "a", "cached", {"rows": art("rows", A)}, duration_s=3.0, cache_key="k")
    store.finish_stage("r1", "b", "succeeded", {"rows": art("rows", B)})
    clock.now = 1200.0
    assert store.reset_for_heal("r1", "a", "rows", A, "rows was damaged", limit=3) == "reset"
    assert store.get_stage("r1", "a") == replace(pending("a"), attempts=1, log_path="/log", cache_key="k",
                                                 message="rows was damaged", heals=1)
    assert store.get_stage("r1", "b").outputs == {"rows": art("rows", B)}
    assert store.get_run("r1").updated_at == 1200.0
    assert store.reset_for_heal("r1", "nope", "rows", A, "damaged", limit=3) == "pending"


def test_only_a_finished_stage_holding_that_very_output_is_sent_back(store: RunStore) -> None:
    new_run(store, "r1", ["a", "b"])
    store.finish_stage("r1", "a", "succeeded", {"rows": art("rows", A)})
    store.finish_stage("r1", "b", "failed", {"rows": art("rows", B)}, message="exit 1")
    assert store.reset_for_heal("r1", "a", "model", A, "damaged", limit=3) == "pending"  # no such output
    assert store.reset_for_heal("r1", "b", "rows", B, "damaged", limit=3) == "pending"  # not finished well
    assert store.get_stage("r1", "a").outputs == {"rows": art("rows", A)}
    assert (store.get_stage("r1", "b").state, store.get_stage("r1", "b").heals) == ("failed", 0)


def test_heals_are_counted_up_to_the_limit_and_reset_per_run(store: RunStore) -> None:
    for run_id in ("r1", "r2"):
        new_run(store, run_id, ["a"])
        store.finish_stage(run_id, "a", "succeeded", {"rows": art("rows", A)})
        assert store.reset_for_heal(run_id, "a", "rows", A, "damaged", limit=2) == "reset"
        store.finish_stage(run_id, "a", "succeeded", {"rows": art("rows", A)})
        assert store.reset_for_heal(run_id, "a", "rows", A, "damaged", limit=2) == "reset"
        store.finish_stage(run_id, "a", "succeeded", {"rows": art("rows", A)})
        assert store.get_stage(run_id, "a").heals == 2
    assert store.reset_for_heal("r1", "a", "rows", A, "damaged", limit=2) == "exhausted"
    assert store.reset_for_heal("r1", "a", "rows", A, "damaged", limit=3) == "reset"
    store.finish_stage("r1", "a", "succeeded", {"rows": art("rows", A)})
    store.reset_heals("r1")
    assert (store.get_stage("r1", "a").heals, store.get_stage("r2", "a").heals) == (0, 2)


# -- transfers ------------------------------------------------------------------------------------

def test_transfers_are_kept_and_priced_per_stage_and_per_run(store: RunStore) -> None:
    new_run(store, "r1", ["train", "eval"])
    new_run(store, "r2", ["train"])
    store.record_transfer("r1", "train", f"rows={A}", 2_000_000_000, 4.0, 0.25)
    store.record_transfer("r1", "train", f"free={B}", 5_000_000_000, 1.0)
    store.record_transfer("r1", "train", f"more={C}", 500_000_000, 1.0, 0.125)
    store.record_transfer("r1", "eval", f"model={D}", 1_000_000_000, 2.0, 0.5)
    store.record_transfer("r2", "train", f"rows={A}", 8_000_000_000, 2.0, 1.0)
    assert rows(store, "SELECT * FROM transfers WHERE run_id='r1' AND stage='train' ORDER BY bytes") == [
        ("r1", "train", f"more={C}", 500_000_000, 1.0, 0.125), ("r1", "train", f"rows={A}", 2_000_000_000, 4.0, 0.25),
        ("r1", "train", f"free={B}", 5_000_000_000, 1.0, 0.0)]
    assert store.stage_egress("r1", "train") == (2.5, 0.375)  # the free move is not egress
    assert store.stage_egress("r1", "eval") == (1.0, 0.5)
    assert store.egress_usd("r1") == 0.875
    assert store.egress_usd("r2") == 1.0


def test_a_stage_or_run_that_moved_nothing_cost_nothing(store: RunStore) -> None:
    new_run(store, "r1", ["train"])
    store.record_transfer("r1", "train", f"free={B}", 5_000_000_000, 1.0)
    egress = store.stage_egress("r1", "train")
    assert egress == (0.0, 0.0) and type(egress[1]) is float
    assert store.stage_egress("r1", "other") == (0.0, 0.0)
    assert store.egress_usd("r1") == 0.0 and type(store.egress_usd("r1")) is float
    assert store.egress_usd("missing") == 0.0


# -- reads ----------------------------------------------------------------------------------------

def test_an_unknown_run_is_named_with_the_runs_that_look_like_it(store: RunStore) -> None:
    new_run(store, "train-1", [])
    new_run(store, "train-123", [])
    new_run(store, "zzz", [])
    with pytest.raises(RunError) as two:
        store.get_run("train-12")
    assert str(two.value) == f"no run 'train-12' in {store.path}. Did you mean train-123, train-1?"
    with pytest.raises(RunError) as close:
        store.get_run("zzy")
    assert str(close.value) == f"no run 'zzy' in {store.path}. Did you mean zzz?"
    with pytest.raises(RunError) as far:
        store.get_run("qqqqqqqq")
    assert str(far.value) == f"no run 'qqqqqqqq' in {store.path}. See `skyflow runs`."


def test_an_unknown_run_is_compared_with_the_200_newest_runs_only(store: RunStore) -> None:
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.executemany("INSERT INTO runs (run_id, pipeline, target, pipeline_digest, overrides_json, "
                         "options_json, state, created_at, updated_at) VALUES (?, 'p', 'p.yaml', 'd', '{}', '{}', "
                         "'succeeded', ?, ?)",
                         [("train-1", 1.0, 1.0)] + [(f"{i:04d}", 10.0 + i, 10.0 + i) for i in range(200)])
    with pytest.raises(RunError) as caught:
        store.get_run("train-2")
    assert str(caught.value) == f"no run 'train-2' in {store.path}. See `skyflow runs`."


def test_get_stage_and_stage_states_read_one_run(store: RunStore) -> None:
    new_run(store, "r1", ["b", "a"])
    new_run(store, "r2", ["a", "c"])
    store.set_stage("r1", "a", state="running")
    store.set_stage("r2", "a", state="failed")
    assert store.stage_states("r1") == {"b": "pending", "a": "running"}
    assert list(store.stage_states("r1")) == ["b", "a"]
    assert store.stage_states("r2") == {"a": "failed", "c": "pending"}
    assert store.stage_states("missing") == {}
    assert store.get_stage("r2", "a") == replace(pending("a"), state="failed")


def test_list_runs_gives_the_newest_runs_first_whole(store: RunStore, clock: Clock) -> None:
    for created, run_id, pipeline in ((100.0, "a-1", "alpha"), (200.0, "b-1", "beta"), (300.0, "a-2", "alpha")):
        clock.now = created
        new_run(store, run_id, ["s"], pipeline=pipeline)
    store.set_stage("a-1", "s", state="succeeded")
    newest = [store.get_run(r) for r in ("a-2", "b-1", "a-1")]
    assert store.list_runs() == newest
    assert store.list_runs(limit=2) == newest[:2]
    assert store.list_runs(pipeline="alpha") == [newest[0], newest[2]]
    assert store.list_runs(limit=1, pipeline="alpha") == [newest[0]]
    assert store.list_runs(pipeline="gamma") == []


def test_list_runs_gives_twenty_runs_by_default(store: RunStore, clock: Clock) -> None:
    for i in range(21):
        clock.now = float(i)
        new_run(store, f"r{i:02d}", [])
    assert [r.run_id for r in store.list_runs()] == [f"r{i:02d}" for i in range(20, 0, -1)]


def test_history_keys_hours_by_where_they_were_measured(store: RunStore) -> None:
    work = {"train": "k-train", "eval": "k-eval"}
    new_run(store, "r1", ["train", "eval"])
    store.finish_stage("r1", "train", "succeeded", {"model": art("model", A, size=3_000_000_000)},
                       work_key="k-train", duration_s=1800.0, infra="local", accelerator="H100")
    # no duration: its output sizes count, its hours do not
    store.finish_stage("r1", "eval", "succeeded", {"report": art("report", B, size=500_000_000)}, work_key="k-eval")
    new_run(store, "r2", ["train"])
    store.finish_stage("r2", "train", "succeeded", {"weights": art("weights", C, size=1_500_000_000)},
                       work_key="k-train", duration_s=7200.0, infra="aws/us-east-1")
    new_run(store, "r3", ["train"])  # failed: neither
    store.finish_stage("r3", "train", "failed", {"partial": art("partial", D)}, work_key="k-train",
                       duration_s=60.0, infra="aws/us-east-1", accelerator="A100")
    new_run(store, "r4", ["train"], pipeline="other")  # another pipeline: neither
    store.finish_stage("r4", "train", "succeeded", {"other": art("other", E)}, work_key="k-train",
                       duration_s=60.0, infra="local")
    hours, sizes = store.history("p", work)
    assert hours == {"train": {"local": [0.5], "default": [2.0]}}
    assert sizes == {"train.model": [3.0], "train.weights": [1.5], "eval.report": [0.5]}


def test_the_newest_finished_stage_with_a_cache_key_gives_the_cached_outputs(store: RunStore, clock: Clock) -> None:
    for run_id in ("r1", "r2", "r3", "r4"):
        new_run(store, run_id, ["a"])
    clock.now = 3000.0
    store.finish_stage("r2", "a", "cached", {"rows": art("rows", B), "model": art("model", C, size=None)},
                       cache_key="k")
    clock.now = 2000.0
    store.finish_stage("r1", "a", "succeeded", {"rows": art("rows", A)}, cache_key="k")
    clock.now = 4000.0
    store.finish_stage("r3", "a", "failed", {"rows": art("rows", D)}, cache_key="k")
    store.set_stage("r4", "a", state="running", cache_key="k", ended_at=5000.0)
    assert store.outputs_for_cache_key("k") == {"rows": art("rows", B), "model": art("model", C, size=0)}
    store.finish_stage("r4", "a", "failed", {}, cache_key="only-failed")
    assert store.outputs_for_cache_key("only-failed") is None
    assert store.outputs_for_cache_key("unknown") is None


def test_gc_keeps_the_newest_runs_of_each_pipeline_and_all_a_running_run_uses(store: RunStore,
                                                                              clock: Clock) -> None:
    def run(run_id: str, pipeline: str, created: float, state: str, outputs: dict[str, str]) -> None:
        clock.now = created
        new_run(store, run_id, list(outputs), pipeline=pipeline)
        for stage, digest in outputs.items():
            store.finish_stage(run_id, stage, "succeeded", {"out": art("out", digest)})
        store.set_run(run_id, state=state)

    run("p-live", "p", 50.0, "running", {"prep": F})
    store.record_transfer("p-live", "prep", f"rows={G}", 1, 1.0)
    run("p-old", "p", 100.0, "succeeded", {"prep": A})
    run("p-new", "p", 200.0, "succeeded", {"prep": B, "train": C})
    run("q-old", "q", 150.0, "succeeded", {"prep": D})
    run("q-new", "q", 250.0, "failed", {"prep": E})
    run("q-done", "q", 10.0, "succeeded", {"prep": H})
    store.record_transfer("q-done", "prep", f"rows={H}", 1, 1.0)
    assert store.referenced_digests(keep_last=1) == {B, C, E, F, G}
    assert store.referenced_digests(keep_last=2) == {A, B, C, D, E, F, G}
    assert store.referenced_digests(keep_last=0) == {F, G}


def test_gc_keeps_an_input_imported_from_a_uri_with_an_equals_sign_in_it(store: RunStore) -> None:
    """Transfers are recorded as "import <ref>=<digest>"; a URI input's ref may hold '=' itself."""
    new_run(store, "live", ["prep"])
    store.set_run("live", state="running")
    store.record_transfer("live", "prep", f"import https://data.example/set?v=1&part=2={A}", 1, 1.0)
    store.record_transfer("live", "prep", "import https://data.example/set?v=1=not-a-digest", 1, 1.0)
    assert store.referenced_digests(keep_last=0) == {A}
