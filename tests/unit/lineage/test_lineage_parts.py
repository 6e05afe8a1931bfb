"""The pieces of lineage that need no MLflow: scrubbing, the spool, naming, URIs, the tree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from skyflow.artifacts.record import ArtifactRecord
from skyflow.cli.lineage_commands import render_lineage
from skyflow.errors import LineageError
from skyflow.lineage.mlflow_client import artifact_root_for
from skyflow.lineage.mlflow_names import clean_key, dataset_digest, flatten
from skyflow.lineage.recorder import check_tracking_uri, describe_tracking, resolve_tracking_uri
from skyflow.lineage.records import LineageNode, Producer, StageRecord
from skyflow.lineage.scrub import Scrubber
from skyflow.lineage.spool import SpoolFile

SECRET = "hunter2-abc"


def test_scrubber_replaces_secrets_in_text_and_trees_longest_first() -> None:
    scrub = Scrubber([SECRET, "hunter2", "", "  "])
    assert scrub.text(f"key={SECRET} short=hunter2") == "key=*** short=***"
    assert scrub.tree({f"k{SECRET}": [SECRET, 3, {"x": "hunter2!"}]}) == {"k***": ["***", 3, {"x": "***!"}]}
    assert Scrubber([]).text("nothing to hide") == "nothing to hide"


def test_scrubber_catches_a_secret_split_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skyflow.lineage.scrub._CHUNK_BYTES", 7)
    source = tmp_path / "log"
    source.write_bytes(b"\xffa" + SECRET.encode() + b"b\n" + SECRET.encode() * 2 + b"\n")
    target = tmp_path / "copy"
    Scrubber([SECRET]).copy_file(source, target, max_bytes=1 << 20)
    assert target.read_bytes() == b"\xffa***b\n******\n"


def test_scrubber_keeps_the_tail_of_a_long_log(tmp_path: Path) -> None:
    source = tmp_path / "log"
    source.write_bytes(b"x" * 100 + b"end\n")
    target = tmp_path / "copy"
    Scrubber([]).copy_file(source, target, max_bytes=10)
    lines = target.read_bytes().splitlines()
    assert lines == [b"[skyflow: the first 94 bytes of this log were left out]", b"xxxxxxend"]


def test_spool_of_a_live_recorder_cannot_be_adopted_and_a_dead_ones_can(tmp_path: Path) -> None:
    spool = SpoolFile.create(tmp_path, "sqlite:///x.db")
    first = spool.append({"kind": "start_run", "n": 1})
    spool.append({"kind": "stage", "n": 2})
    spool.mark_done(first)
    assert SpoolFile.adopt(spool.path) is None  # its owner still holds the lock
    spool.close()

    adopted = SpoolFile.adopt(spool.path)
    assert adopted is not None
    orphan, events = adopted
    assert [e.payload["n"] for e in events] == [2] and events[0].attempts == 1
    orphan.mark_done(events[0])
    orphan.close()
    assert not spool.path.exists()


def test_mlflow_names_and_limits() -> None:
    assert dataset_digest("sha256:" + "ab" * 32) == "ab" * 18
    assert dataset_digest("deadbeef") == "deadbeef"
    assert flatten("resources", {"accelerators": {"H100": 8}, "ports": [1, 2], "none": None}) == {
        "resources.accelerators.H100": "8",
        "resources.ports": "[1, 2]",
    }
    assert clean_key("output_bytes.my model?") == "output_bytes.my model_"


def test_tracking_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://mlflow:5000"
    assert resolve_tracking_uri("sqlite:///other.db", tmp_path) == "sqlite:///other.db"
    assert artifact_root_for("sqlite:////srv/x/mlflow.db") == "file:///srv/x/mlflow-artifacts"
    assert artifact_root_for("http://mlflow:5000") is None
    assert describe_tracking("https://bob:tok3n@mlflow.example:8443/") == "MLflow server https://mlflow.example:8443/"
    assert describe_tracking("sqlite:////srv/x/mlflow.db") == "MLflow sqlite store /srv/x/mlflow.db"


def test_a_database_store_without_mlflows_sql_parts_is_one_error_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "alembic" else real_find_spec(name))
    with pytest.raises(LineageError, match=r"through alembic, missing here .*: pip install alembic, "):
        check_tracking_uri("sqlite:////tmp/x.db")
    check_tracking_uri("http://127.0.0.1:5000")  # a tracking server needs only the client


def test_stage_record_round_trips_through_json() -> None:
    rec = StageRecord(
        "r", "sft", "succeeded", 1, {"infra": "local"}, {"cpus": 2}, 1.0, None, 0.0, 0.0, 0.0, False,
        [ArtifactRecord("raw", "s3://b/raw", "sha256:00", 1)], [ArtifactRecord("m", "file:///m", "sha256:11")],
    )  # fmt: skip
    assert StageRecord.from_json(rec.to_json()) == rec


def test_render_marks_raw_data_and_repeated_producers() -> None:
    producer = Producer("r1", "rlhf", "sft", "succeeded", False, "code-1", "abc", True, None, "m1", "1")
    raw = LineageNode(ArtifactRecord("prompts", "s3://b/p", "sha256:" + "0" * 64, 10), None)
    model = LineageNode(ArtifactRecord("model", "file:///m", "sha256:" + "a" * 64, 2_500_000), producer, (raw,))
    rm = dataclasses.replace(producer, stage="rm")
    reward = LineageNode(ArtifactRecord("reward", "file:///r", "sha256:" + "b" * 64), rm, (model,))
    top = LineageNode(ArtifactRecord("policy", "file:///p", "sha256:" + "c" * 64), producer, (model, reward))

    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_lineage(top))
    text = console.export_text()
    assert "2.5 MB" in text and "git abc+dirty" in text
    assert text.count("raw data") == 1
    assert "made by stage sft (shown above)" in text
