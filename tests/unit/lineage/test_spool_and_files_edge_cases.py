"""Lineage files written by other processes, read back when they are damaged, gone or foreign: the spool,
a node's MLflow file store, the sqlite reader, log scrubbing and the sqlite journal mode."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from skyflow.errors import LineageError
from skyflow.lineage.mlflow_client import use_write_ahead_log
from skyflow.lineage.node_replay import read_file_store
from skyflow.lineage.recorder import LineageRecorder, NullRecorder, check_tracking_uri
from skyflow.lineage.records import RunInfo, StageRecord
from skyflow.lineage.scrub import Scrubber
from skyflow.lineage.spool import SpoolFile, orphan_paths
from skyflow.lineage.store_reader import SqliteLineageReader


def test_a_spool_file_removed_before_it_is_adopted_is_skipped(tmp_path: Path) -> None:
    """A recorder that finished and deleted its file between the listing and the adoption leaves nothing to adopt."""
    assert SpoolFile.adopt(tmp_path / "gone" / "1-abc.jsonl") is None


def test_an_adopted_spool_skips_a_cut_last_line_and_lines_of_no_known_kind(tmp_path: Path) -> None:
    """A writer killed mid-line leaves half a JSON line; lines that are neither an event nor a done mark are
    ignored; the events still open come back as retries, and new ones continue the sequence."""
    path = tmp_path / "1-dead.jsonl"
    lines = [{"seq": 0, "event": {"kind": "start_run"}}, {"seq": 1, "event": {"kind": "stage"}}, {"done": 0},
             {"note": "from a newer skyflow"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"seq": 2, "event": {"ki')
    adopted = SpoolFile.adopt(path)
    assert adopted is not None
    spool, events = adopted
    assert [(e.seq, e.payload, e.attempts) for e in events] == [(1, {"kind": "stage"}, 1)]
    assert spool.append({"kind": "end_run"}).seq == 2
    assert spool.open_events == 2
    spool.close()
    assert path.exists()  # two events still open: the next recorder adopts them


def test_orphans_of_a_directory_not_made_yet_are_none(tmp_path: Path) -> None:
    assert orphan_paths(tmp_path / "lineage-spool" / "abc", tmp_path / "own.jsonl") == []


def test_orphans_are_listed_oldest_first_without_the_recorders_own_file(tmp_path: Path) -> None:
    import os

    own, newer, older = (tmp_path / f"{name}.jsonl" for name in ("own", "newer", "older"))
    for age, path in ((0, own), (10, newer), (20, older)):
        path.write_text("")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    assert orphan_paths(tmp_path, own) == [older, newer]


def test_a_spool_file_sent_and_removed_while_orphans_are_sorted_counts_as_oldest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing and the stat of each file are not atomic: a file removed in between sorts first and
    is then skipped by the adoption instead of failing the recorder's start."""
    kept = tmp_path / "kept.jsonl"
    kept.write_text("")
    vanishing = tmp_path / "vanishing.jsonl"
    vanishing.write_text("")
    real_glob = Path.glob

    def glob_then_remove(self: Path, pattern: str):  # type: ignore[no-untyped-def]
        found = list(real_glob(self, pattern))
        vanishing.unlink(missing_ok=True)
        return iter(found)

    monkeypatch.setattr(Path, "glob", glob_then_remove)
    assert orphan_paths(tmp_path, tmp_path / "own.jsonl") == [vanishing, kept]
    adopted = SpoolFile.adopt(vanishing)
    assert adopted is not None and adopted[1] == []
    adopted[0].close()
    assert not vanishing.exists()


def test_a_short_secret_near_a_chunk_end_is_carried_into_the_next_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With secrets of different lengths, a short one that starts in the unsafe tail of a chunk is not
    written out half-checked: it is carried over and replaced whole."""
    monkeypatch.setattr("skyflow.lineage.scrub._CHUNK_BYTES", 8)
    source = tmp_path / "log"
    source.write_bytes(b"abcdefpw-and hunter2-abc then pw\n")
    target = tmp_path / "copy"
    Scrubber(["hunter2-abc", "pw"]).copy_file(source, target, max_bytes=1 << 20)
    assert target.read_bytes() == b"abcdef***-and *** then ***\n"


def test_a_node_store_is_read_leniently(tmp_path: Path) -> None:
    """A node's MLflow file store may hold deleted runs, runs without metrics, damaged metric lines and
    meta files without an end time: each is read as far as it makes sense, nothing fails."""
    mlruns = tmp_path / "mlruns"
    live = mlruns / "4" / "run-live"
    (live / "metrics").mkdir(parents=True)
    (live / "meta.yaml").write_text("run_id: run-live\nstart_time: 1000\nstatus: 3\n")
    (live / "metrics" / "loss").write_text("1000 0.5 0\n1001\n1002 not-a-number 2\n1003 0.25\n")
    (live / "params").mkdir()
    (live / "params" / "lr").write_text("3e-4")
    bare = mlruns / "4" / "run-bare"
    bare.mkdir(parents=True)
    (bare / "meta.yaml").write_text("run_id: run-bare\nstart_time: soon\nend_time: 2000\n")
    trashed = mlruns / ".trash" / "run-deleted"
    trashed.mkdir(parents=True)
    (trashed / "meta.yaml").write_text("run_id: run-deleted\n")

    runs = {r["run_id"]: r for r in read_file_store(mlruns)}
    assert set(runs) == {"run-live", "run-bare"}
    live_run = runs["run-live"]
    assert live_run["metrics"] == [("loss", 0.5, 1000, 0), ("loss", 0.25, 1003, 0)]
    assert (live_run["start_time"], live_run["end_time"], live_run["params"]) == (1000, None, {"lr": "3e-4"})
    bare_run = runs["run-bare"]
    assert (bare_run["metrics"], bare_run["params"], bare_run["tags"], bare_run["artifacts"]) == ([], {}, {}, None)
    assert (bare_run["start_time"], bare_run["end_time"]) == (None, 2000)


def test_the_sqlite_reader_declines_a_database_of_another_schema_and_a_file_that_is_no_database(
        tmp_path: Path) -> None:
    """Such a store is left to the MLflow client rather than read with the wrong columns."""
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
    assert SqliteLineageReader.open(foreign) is None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a sqlite database, just text that is long enough" * 4)
    assert SqliteLineageReader.open(garbage) is None


def test_a_store_that_cannot_switch_to_write_ahead_logging_keeps_working(tmp_path: Path) -> None:
    """Best effort: a path sqlite cannot open as a database is left as it is, without an error."""
    folder = tmp_path / "mlflow.db"
    folder.mkdir()
    use_write_ahead_log(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    db = tmp_path / "real.db"
    use_write_ahead_log(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_null_recorder_records_nothing_and_gives_stages_no_run() -> None:
    recorder = NullRecorder()
    assert isinstance(recorder, LineageRecorder)
    info = RunInfo("r", "p", "d", {}, None, None, False, None, "0", 0.0)
    rec = StageRecord("r", "s", "succeeded", 1, {}, {}, 1.0, None, None, 0.0, 0.0, False)
    # what the no-op methods return is what this checks: mypy knows they return nothing
    assert recorder.start_run(info) is None and recorder.record_stage(rec) is None  # type: ignore[func-returns-value]
    assert recorder.open_stage("r", "s") is None
    assert recorder.end_run("r", "succeeded", {}) is None and recorder.close() is None  # type: ignore[func-returns-value]


def test_lineage_without_mlflow_installed_is_one_error_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "mlflow" else real_find_spec(name))
    with pytest.raises(LineageError, match=r"lineage needs MLflow.*pip install 'mlflow-skinny.*or pass --no-lineage"):
        check_tracking_uri("http://127.0.0.1:5000")
