"""A stage's MLflow run opened with plain SQL while MLflow is still loading (`SqliteRunOpener`): the
rows are the ones MLflow's own `create_run` (and `create_experiment`, for a new pipeline or a new store
made from the template) writes, MLflow reads and logs to them, the pipeline run made early is
completed (not doubled) when MLflow has loaded, and a stage starts without waiting."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from skyflow.lineage.drain import wait_for_drain
from skyflow.lineage.mlflow_names import TAG_OPENED_EARLY
from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.mlflow_store import MlflowStore, pipeline_experiment_tags, pipeline_run_tags, stage_run_tags
from skyflow.lineage.records import RunInfo, StageRecord
from skyflow.lineage.sqlite_runs import SqliteRunOpener
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration


def info(run_id: str, pipeline: str = "pipe", key: str = "") -> RunInfo:
    return RunInfo(run_id=run_id, pipeline=pipeline, pipeline_digest="sha256:aa", params={"lr": 0.1},
                   plan_json={"stages": {"train": {"infra": "local"}}}, git_commit=None, git_dirty=False,
                   code_digest="sha256:bb", skyflow_version="0.1.0", started_at=time.time(),
                   run_key=key or f"key-{run_id}", user="ada", source_name="pipe.yaml", source_type="LOCAL")


def record(run: RunInfo, stage: str, mlflow_run_id: str | None) -> StageRecord:
    return StageRecord(run.run_id, stage, "succeeded", 1, {"infra": "local"}, {"cpus": 1}, 0.5, 0.0, 0.0, 0.0, 0.0,
                       False, mlflow_run_id=mlflow_run_id, run_key=run.run_key, record_id=f"rec-{stage}",
                       started_at=time.time(), ended_at=time.time())


@pytest.fixture
def uri(tmp_path: Path) -> str:
    """A store that holds the pipeline's experiment: one earlier run made it through MLflow."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowStore(uri).start_run(info("first"), retry=False)
    return uri


def run_rows(uri: str, *run_ids: str) -> list[dict[str, object]]:
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(db.execute("SELECT * FROM runs WHERE run_uuid = ?", (r,)).fetchone()) for r in run_ids]


def test_the_rows_written_are_the_rows_mlflow_writes_and_mlflow_reads_and_logs_to_them(uri: str) -> None:
    client = MlflowClient(uri)
    opener = SqliteRunOpener.for_uri(uri)
    assert opener is not None
    experiment = opener.experiment("pipe")
    assert experiment is not None
    assert experiment.experiment_id == client.get_experiment_by_name("pipe").experiment_id  # type: ignore[union-attr]
    tags = {**stage_run_tags(pipeline_run_tags(info("r1")), "parent-id", "train"), "skyflow.state": "running"}
    early = opener.create_run(experiment, "train", tags, start_time_s=1_700_000_000.5)
    made = client.create_run(experiment.experiment_id, start_time=1_700_000_000_500, tags=tags, run_name="train")

    mine, theirs = run_rows(uri, early, made.info.run_id)
    assert {k: v for k, v in mine.items() if k not in ("run_uuid", "artifact_uri")} == \
        {k: v for k, v in theirs.items() if k not in ("run_uuid", "artifact_uri")}
    assert mine["artifact_uri"] == str(theirs["artifact_uri"]).replace(made.info.run_id, early)
    got = client.get_run(early)
    assert got.info.status == "RUNNING" and got.info.run_name == "train" and got.info.user_id == "ada"
    assert got.data.tags == client.get_run(made.info.run_id).data.tags
    client.log_metric(early, "loss", 0.5, step=3)  # what the stage's own code does with MLFLOW_RUN_ID
    client.set_terminated(early)
    assert [(m.step, m.value) for m in client.get_metric_history(early, "loss")] == [(3, 0.5)]
    assert client.get_run(early).info.status == "FINISHED"


def test_the_pipeline_run_made_early_is_completed_once_mlflow_has_loaded(uri: str) -> None:
    opener = SqliteRunOpener.for_uri(uri)
    assert opener is not None
    experiment = opener.experiment("pipe")
    assert experiment is not None
    run = info("r2")
    parent = opener.create_run(experiment, run.run_id, {**pipeline_run_tags(run), TAG_OPENED_EARLY: "1"},
                               run.started_at)
    assert opener.find_pipeline_run(experiment.experiment_id, run.run_key) == parent

    made = MlflowStore(uri).start_run(run, retry=False)
    assert made.run_id == parent and made.fresh
    client = MlflowClient(uri)
    got = client.get_run(parent)
    assert TAG_OPENED_EARLY not in got.data.tags and got.data.params == {"lr": "0.1"}
    assert [a.path for a in client.list_artifacts(parent)] == ["plan.json"]
    parents = client.search_runs([experiment.experiment_id], "tags.`skyflow.run_id` = 'r2'")
    assert [p.info.run_id for p in parents] == [parent]


def test_the_experiment_written_is_the_one_mlflow_writes(uri: str, tmp_path: Path) -> None:
    opener = SqliteRunOpener.for_uri(uri)
    assert opener is not None
    root = (tmp_path / "artifacts").as_uri()
    early = opener.create_experiment("early", root, pipeline_experiment_tags("early"))
    client = MlflowClient(uri)
    made = client.create_experiment("made", artifact_location=root, tags=pipeline_experiment_tags("early"))

    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        query = "SELECT * FROM experiments WHERE name IN ('early', 'made')"
        rows = {r["name"]: dict(r) for r in db.execute(query)}
        tags = {e: sorted(tuple(t) for t in db.execute("SELECT key, value FROM experiment_tags WHERE experiment_id = ?",
                                                        (int(e),))) for e in (early.experiment_id, made)}
    different = {"experiment_id", "name", "creation_time", "last_update_time"}
    assert {k: v for k, v in rows["early"].items() if k not in different} == \
        {k: v for k, v in rows["made"].items() if k not in different}
    assert rows["early"]["creation_time"] == rows["early"]["last_update_time"] > 0
    assert tags[early.experiment_id] == tags[made]
    got = client.get_experiment(early.experiment_id)
    assert got.name == "early" and got.lifecycle_stage == "active" and got.artifact_location == root
    assert opener.experiment("early") == early
    with pytest.raises(sqlite3.IntegrityError):  # one of that name exists: another runner made it
        opener.create_experiment("early", root, {})


def test_a_new_store_is_made_from_the_template_when_there_is_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    fresh = tmp_path / "fresh" / "mlflow.db"
    assert SqliteRunOpener.for_uri(f"sqlite:///{fresh}") is None and not fresh.exists()  # making one needs MLflow
    MlflowStore(f"sqlite:///{tmp_path / 'first.db'}")  # MLflow opens a new store: the template is made
    opener = SqliteRunOpener.for_uri(f"sqlite:///{fresh}")
    assert opener is not None and fresh.is_file()
    experiment = opener.create_experiment("pipe", (tmp_path / "a").as_uri(), pipeline_experiment_tags("pipe"))
    run_id = opener.create_run(experiment, "train", {"k": "v"})
    client = MlflowClient(f"sqlite:///{fresh}")  # MLflow opens the copy and adds its Default experiment
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "pipe"]
    assert client.get_run(run_id).data.tags["k"] == "v"


def test_only_a_known_sqlite_store_gets_an_opener(uri: str, tmp_path: Path) -> None:
    assert SqliteRunOpener.for_uri("http://127.0.0.1:5000") is None
    opener = SqliteRunOpener.for_uri(uri)
    assert opener is not None and opener.experiment("another-pipeline") is None
    MlflowClient(uri).delete_experiment(MlflowClient(uri).get_experiment_by_name("pipe").experiment_id)  # type: ignore[union-attr]
    assert opener.experiment("pipe") is None
    # a schema with a column MLflow would fill and this does not: MLflow's own way
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                   "start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, "
                   "experiment_id, workspace TEXT NOT NULL)")
        db.execute("CREATE TABLE tags (key, value, run_uuid)")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY NOT NULL, name, artifact_location, "
                   "lifecycle_stage, creation_time, last_update_time)")
        db.execute("CREATE TABLE experiment_tags (key, value, experiment_id)")
    assert SqliteRunOpener.for_uri(f"sqlite:///{other}") is None
    with sqlite3.connect(other) as db:
        db.execute("ALTER TABLE runs DROP COLUMN workspace")
    assert SqliteRunOpener.for_uri(f"sqlite:///{other}") is not None


def test_a_stage_gets_its_run_while_mlflow_is_still_loading(uri: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = threading.Event()
    original = MlflowRecorder._open_store

    def slow_open(self: MlflowRecorder) -> MlflowStore:
        assert loaded.wait(60)
        return original(self)

    monkeypatch.setattr(MlflowRecorder, "_open_store", slow_open)
    recorder = MlflowRecorder(uri, [], skyflow_home=tmp_path / "home")
    run = info("r3")
    recorder.start_run(run)
    # waiting for the store would give None after the timeout: the store cannot open until `loaded`
    stage = recorder.open_stage(run.run_id, "train", timeout_s=1.0)
    assert stage is not None and stage.tracking_uri == uri

    # a pipeline MLflow has no experiment for yet: the experiment is made early too
    new = info("r4", pipeline="new-pipeline")
    recorder.start_run(new)
    new_stage = recorder.open_stage(new.run_id, "train", timeout_s=0.5)
    assert new_stage is not None and new_stage.experiment_id != stage.experiment_id

    loaded.set()
    recorder.record_stage(record(run, "train", stage.run_id))
    recorder.end_run(run.run_id, "succeeded", {"actual_usd": 0.0})
    recorder.record_stage(record(new, "train", new_stage.run_id))
    recorder.end_run(new.run_id, "succeeded", {"actual_usd": 0.0})
    recorder.close(timeout_s=60)
    assert recorder.pending == 0
    client = MlflowClient(uri)
    made = client.get_experiment_by_name("new-pipeline")
    assert made is not None and made.experiment_id == new_stage.experiment_id
    assert made.tags == pipeline_experiment_tags("new-pipeline")
    new_runs = client.search_runs([made.experiment_id], "tags.`skyflow.run_id` = 'r4'")
    assert sorted((r.info.run_name, r.info.status) for r in new_runs) == [("r4", "FINISHED"), ("train", "FINISHED")]
    runs = client.search_runs([stage.experiment_id], "tags.`skyflow.run_id` = 'r3'")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"r3", "train"}  # one pipeline run, one stage run: the early ones
    assert by_name["train"].info.run_id == stage.run_id and by_name["train"].info.status == "FINISHED"
    assert by_name["train"].data.tags["mlflow.parentRunId"] == by_name["r3"].info.run_id
    assert by_name["r3"].info.status == "FINISHED" and TAG_OPENED_EARLY not in by_name["r3"].data.tags


STAGE_LOGS = """\
name: logs
stages:
  train:
    run: |
      echo $MLFLOW_RUN_ID > $SKYFLOW_OUTPUT_O/run_id.txt
      python -c "import mlflow; mlflow.log_metric('loss', 0.25)"
    outputs: [o]
"""


def test_the_cli_leaves_lineage_to_the_drain_unless_told_to_wait(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    skyflow = Skyflow(tmp_path / "home", work)
    skyflow.write("logs.yaml", STAGE_LOGS)
    store = f"sqlite:///{(skyflow.home / 'mlflow.db').resolve()}"
    for run_id in ("first", "second"):  # both open their runs early: the first in a new store, from the template
        code, _, err = skyflow.run_json("logs.yaml", "--run-id", run_id, "--no-cache")
        assert code == 0, err
    assert wait_for_drain(store, skyflow.home)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("logs")
    assert experiment is not None
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "logs"]
    for run_id in ("first", "second"):
        runs = client.search_runs([experiment.experiment_id], f"tags.`skyflow.run_id` = '{run_id}'")
        assert sorted(r.info.run_name for r in runs) == [run_id, "train"]
        train = next(r for r in runs if r.info.run_name == "train")
        assert train.data.metrics["loss"] == 0.25 and train.info.status == "FINISHED"

    # a stage that is over before MLflow has loaded: without the flag the run would hand its records off
    skyflow.write("quick.yaml", "name: logs\nstages:\n  train: {run: 'echo 1 > $SKYFLOW_OUTPUT_O/x', outputs: [o]}\n")
    code, _, err = skyflow.run_json("quick.yaml", "--run-id", "third", "--no-cache", "--wait-for-lineage")
    assert code == 0, err
    spooled = [p for p in (skyflow.home / "lineage-spool").rglob("*.jsonl") if p.stat().st_size]
    assert spooled == []  # everything sent before the command returned
    third = client.search_runs([experiment.experiment_id], "tags.`skyflow.run_id` = 'third'")
    assert sorted((r.info.run_name, r.info.status) for r in third) == [("third", "FINISHED"), ("train", "FINISHED")]


def test_a_deferred_recorder_loads_mlflow_only_when_something_needs_the_store(uri: str, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    original = MlflowRecorder._open_store

    def counted(self: MlflowRecorder) -> MlflowStore:
        opened.append(self.tracking_uri)
        return original(self)

    monkeypatch.setattr(MlflowRecorder, "_open_store", counted)
    home = tmp_path / "home"
    # a short run: its stage's run opened early, its records handed off; MLflow never loaded here
    recorder = MlflowRecorder(uri, [], skyflow_home=home, defer_open_s=600)
    run = info("r5")
    recorder.start_run(run)
    stage = recorder.open_stage(run.run_id, "train", timeout_s=1.0)
    assert stage is not None
    recorder.record_stage(record(run, "train", stage.run_id))
    recorder.end_run(run.run_id, "succeeded", {})
    assert recorder.hand_off()
    assert opened == []
    assert wait_for_drain(uri, home)  # the drain process sent them (or this one, if it came first)
    train = MlflowClient(uri).get_run(stage.run_id)
    assert train.info.status == "FINISHED" and train.data.tags["skyflow.state"] == "succeeded"

    # a stage that needs the store ends the deferral at once: a new store on a machine that has no
    # template yet (only MLflow can make one)
    opened.clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    new_uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    recorder = MlflowRecorder(new_uri, [], skyflow_home=home, defer_open_s=600)
    new = info("r6", pipeline="new-pipeline")
    recorder.start_run(new)
    assert recorder.open_stage(new.run_id, "train", timeout_s=30) is not None
    assert opened == [new_uri]
    recorder.close()
