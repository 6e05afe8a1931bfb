"""The recorder and the drain when the tracking store cannot be opened or reached: nothing is lost, nothing
waits longer than asked, and what cannot be fetched is said once."""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import replace
from pathlib import Path

import mlflow  # noqa: F401  the recorder's worker imports it; loaded here so no test waits on the import
import pytest

from skyflow.lineage.drain import _has_records, _locked, wait_for_drain
from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.records import RunInfo, StageRecord
from skyflow.lineage.spool import SpoolFile, spool_dir

UNOPENABLE = "bogus://nowhere"


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _spooled_events(path: Path) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [entry["event"] for entry in entries if "seq" in entry]


def _stage_record() -> StageRecord:
    return StageRecord("run-1", "sft", "succeeded", 1, {"infra": "local"}, {"cpus": 2}, 1.0, None, None, 0.0, 0.0,
                       False)


def test_a_drain_against_an_unreachable_server_gives_up_and_keeps_the_records(tmp_path: Path) -> None:
    uri = _closed_port_uri()
    left = SpoolFile.create(spool_dir(tmp_path, uri), uri)
    left.append({"kind": "end_run", "run_id": "run-1", "run_key": "run-1", "state": "succeeded", "totals": {}})
    left.close()

    assert wait_for_drain(uri, tmp_path, timeout_s=30) is False

    adopted = SpoolFile.adopt(left.path)
    assert adopted is not None
    assert [e.payload["kind"] for e in adopted[1]] == ["end_run"]
    adopted[0].close()
    assert [p.name for p in left.path.parent.glob("*.jsonl")] == [left.path.name]  # the drain's own file is gone


def test_a_drain_does_not_take_records_a_live_writer_still_holds(tmp_path: Path) -> None:
    """While their recorder holds its spool file, the records are its to send: the wait ends unsent."""
    uri = "sqlite:///never-opened.db"
    held = SpoolFile.create(spool_dir(tmp_path, uri), uri)
    held.append({"kind": "end_run", "run_id": "run-1", "run_key": "run-1", "state": "succeeded", "totals": {}})
    try:
        assert wait_for_drain(uri, tmp_path, timeout_s=0.2) is False
        assert _spooled_events(held.path) == [{"kind": "end_run", "run_id": "run-1", "run_key": "run-1",
                                               "state": "succeeded", "totals": {}}]
    finally:
        held.close()


def test_drain_checks_treat_a_file_removed_meanwhile_as_empty_and_unlocked(tmp_path: Path) -> None:
    gone = tmp_path / "removed" / "1-abc.jsonl"
    assert _has_records(gone) is False
    assert _locked(gone) is False
    unlocked = tmp_path / "2-def.jsonl"
    unlocked.write_text('{"seq":0,"event":{}}\n')
    assert _has_records(unlocked) is True and _locked(unlocked) is False
    held = SpoolFile.create(tmp_path, "sqlite:///x.db")
    assert _locked(held.path) is True
    held.close()


def test_with_a_store_that_cannot_open_nothing_is_handed_off_and_a_stage_does_not_wait(tmp_path: Path) -> None:
    """`hand_off` only hands over records that exist; `open_stage` returns without a run once its wait is over."""
    recorder = MlflowRecorder(UNOPENABLE, [], skyflow_home=tmp_path)
    try:
        assert recorder.hand_off() is False
        assert recorder.open_stage("run-1", "sft", timeout_s=0.0) is None
    finally:
        recorder.close(timeout_s=0.0)


def test_a_missing_log_and_a_node_store_that_cannot_be_read_leave_the_record_without_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = MlflowRecorder(UNOPENABLE, [], skyflow_home=tmp_path)
    rec = replace(_stage_record(), log_path=str(tmp_path / "missing.log"),
                  node_mlflow=[("nosuchfs://bucket/runs", "run-1/sft/attempt-1/mlflow.json")])
    try:
        with caplog.at_level(logging.WARNING, logger="skyflow.lineage.mlflow_recorder"):
            recorder.record_stage(rec)
        spooled = _spooled_events(recorder.spool_path)
    finally:
        recorder.close(timeout_s=0.0)

    assert ("cannot fetch the MLflow records a node carried back from "
            "nosuchfs://bucket/runs/run-1/sft/attempt-1/mlflow.json") in caplog.text
    assert "unknown store scheme 'nosuchfs'" in caplog.text
    (stage,) = [e for e in spooled if e["kind"] == "stage"]
    assert stage["log_copy"] is None and stage["node_runs"] == []
    record = stage["record"]
    assert isinstance(record, dict) and record["stage"] == "sft" and record["record_id"]
    assert [p.name for p in spool_dir(tmp_path, UNOPENABLE).iterdir() if p.name.startswith(("node-", "log-"))] == []


def test_a_server_gone_while_the_worker_is_inside_mlflow_holds_neither_a_stage_nor_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client retries a lost server for minutes. The worker caught in such a call sends nothing
    and counts no failure, so a starting stage and `close()` must see for themselves that the server is
    gone (here at once: a closed port), and say why, rather than wait out their timeouts."""
    released = threading.Event()

    def stuck_in_mlflow(self: MlflowRecorder) -> object:
        released.wait()
        raise ConnectionError("the call's retries ran out")

    monkeypatch.setattr(MlflowRecorder, "_open_store", stuck_in_mlflow)
    uri = _closed_port_uri()
    recorder = MlflowRecorder(uri, [], skyflow_home=tmp_path)
    try:
        recorder.start_run(RunInfo("run-1", "p", "digest", {}, None, None, False, None, "0", 0.0))
        assert recorder.open_stage("run-1", "sft", timeout_s=30) is None
        assert recorder.last_error is not None and "Connection refused" in recorder.last_error
        recorder.last_error = None
        assert recorder.flush(timeout_s=30) is False
        assert recorder.last_error is not None and "Connection refused" in recorder.last_error
        assert [e["kind"] for e in _spooled_events(recorder.spool_path)] == ["start_run"]
    finally:
        released.set()
        recorder.close(timeout_s=0.0)
