"""Lineage against a real sqlite MLflow store where things go wrong or are unusual: records the store
refuses, replies lost after a write, records left in a spool, experiments deleted or made meanwhile,
stage runs that vanished, node runs replayed twice, declared outputs that are not all there, and
traces that loop or run deep."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException

from skyflow.artifacts import commit_output, open_store
from skyflow.artifacts.record import ArtifactRecord
from skyflow.errors import LineageError
from skyflow.lineage.drain import wait_for_drain
from skyflow.lineage.mlflow_names import CONTEXT_TAG, TAG_KIND, TAG_OUTPUT_URIS, TAG_PIPELINE
from skyflow.lineage.mlflow_outputs import log_declared_outputs
from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.mlflow_store import MlflowStore, is_rejection
from skyflow.lineage.node_replay import replay_node_runs
from skyflow.lineage.records import DeclaredOutput
from skyflow.lineage.spool import SpoolFile, spool_dir
from skyflow.lineage.trace import trace_artifact
from skyflow.lineage.views import pipeline_experiment
from tests.integration.lineage.lineage_pipeline import MODEL, POLICY, RAW, SECRET, run_info, stage_record

pytestmark = pytest.mark.integration


@pytest.fixture()
def uri(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store's URI; experiments these tests make as other tools do (no artifact location) put
    MLflow's default ./mlruns in the test's home, not in the checkout."""
    monkeypatch.chdir(home)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def stage_runs(client: MlflowClient, pipeline: str, stage: str) -> list[Any]:
    experiment = client.get_experiment_by_name(pipeline)
    assert experiment is not None
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get(TAG_KIND) == "stage_run" and r.info.run_name == stage]


# -- the recorder ---------------------------------------------------------------------------------

def test_a_record_the_store_refuses_is_set_aside_and_the_records_after_it_still_go(home: Path, uri: str) -> None:
    recorder = MlflowRecorder(uri, [SECRET], skyflow_home=home)
    recorder.record_stage(stage_record("never-started", "sft", [RAW], [MODEL]))
    recorder.start_run(run_info("run-ok"))
    recorder.record_stage(stage_record("run-ok", "sft", [RAW], [MODEL]))
    recorder.end_run("run-ok", "succeeded", {})
    assert recorder.flush(60), recorder.last_error
    recorder.close()

    assert recorder.last_error is not None and recorder.last_error.startswith(f"rejected by {uri}: ")
    (aside,) = [json.loads(line) for line in (spool_dir(home, uri) / "rejected.jsonl").read_text().splitlines()]
    assert "start_run was never recorded" in aside["error"] and "'never-started'" in aside["error"]
    assert aside["event"]["kind"] == "stage" and aside["event"]["record"]["run_id"] == "never-started"
    assert SECRET not in json.dumps(aside)
    (sft,) = stage_runs(MlflowClient(uri), "rlhf", "sft")
    assert sft.data.tags["skyflow.run_id"] == "run-ok" and sft.info.status == "FINISHED"


def test_a_stage_record_sent_again_after_its_reply_was_lost_updates_the_run_the_first_send_made(
        home: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real_record_stage = MlflowStore.record_stage

    def reply_lost_once(self: MlflowStore, rec: Any, **kwargs: Any) -> str:
        calls.append(kwargs["retry"])
        run_id = real_record_stage(self, rec, **kwargs)
        if len(calls) == 1:
            raise ConnectionResetError("the reply was lost")
        return run_id

    monkeypatch.setattr(MlflowStore, "record_stage", reply_lost_once)
    recorder = MlflowRecorder(uri, [], skyflow_home=home)
    recorder.start_run(run_info("run-lost"))
    recorder.record_stage(stage_record("run-lost", "rm", [MODEL], [POLICY], attempts=2))
    assert recorder.flush(60) or recorder.flush(60), recorder.last_error
    recorder.close()

    assert calls == [False, True]
    (rm,) = stage_runs(MlflowClient(uri), "rlhf", "rm")
    assert rm.data.metrics["attempts"] == 2 and rm.info.status == "FINISHED"
    assert "skyflow.superseded_by" not in rm.data.tags


def test_records_left_in_a_spool_are_sent_without_a_lost_log_copy_and_unknown_events_are_dropped(
        home: Path, uri: str) -> None:
    """A run that handed its records off and whose log copy was removed meanwhile still gets its stage run;
    an event kind this version does not know (written by a newer skyflow) is passed over."""
    left = SpoolFile.create(spool_dir(home, uri), uri)
    left.append({"kind": "start_run", "info": run_info("run-left").to_json()})
    rec = replace(stage_record("run-left", "sft", [RAW], [MODEL]), record_id="rec-1")
    left.append({"kind": "stage", "record": rec.to_json(), "log_copy": str(home / "log-gone" / "sft.log"),
                 "node_runs": []})
    left.append({"kind": "from_a_newer_skyflow", "data": 1})
    left.append({"kind": "end_run", "run_id": "run-left", "run_key": "run-left", "state": "succeeded",
                 "totals": {"actual_usd": 2.0}, "ended_at": None})
    left.close()

    assert wait_for_drain(uri, home, timeout_s=60)

    assert list(spool_dir(home, uri).glob("*.jsonl")) == []
    client = MlflowClient(uri)
    (sft,) = stage_runs(client, "rlhf", "sft")
    assert sft.data.tags["skyflow.record_id"] == "rec-1"
    assert client.list_artifacts(sft.info.run_id, "logs") == []
    parent = client.get_run(sft.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["skyflow.state"] == "succeeded" and parent.data.metrics["total_actual_usd"] == 2.0


# -- the store ------------------------------------------------------------------------------------

def test_a_stage_run_that_no_longer_exists_is_replaced_by_a_new_one(uri: str) -> None:
    """The run opened when the stage started was removed from the store before the record came."""
    store = MlflowStore(uri)
    store.start_run(run_info("run-gone"), retry=False)
    rec = replace(stage_record("run-gone", "sft", [RAW], [MODEL]), mlflow_run_id="0" * 32)
    run_id = store.record_stage(rec, log_copy=None, retry=False)

    assert run_id != "0" * 32
    run = store.client.get_run(run_id)
    assert run.info.run_name == "sft" and run.data.tags[TAG_KIND] == "stage_run"
    assert "skyflow.record_id" not in run.data.tags


def test_a_deleted_experiment_is_restored_and_one_made_by_an_older_skyflow_opens_on_model_training(
        uri: str) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("rlhf", tags={TAG_PIPELINE: "rlhf"})
    client.delete_experiment(experiment_id)

    parent = MlflowStore(uri).start_run(run_info("run-back"), retry=False)

    experiment = client.get_experiment(experiment_id)
    assert parent.experiment_id == experiment_id
    assert experiment.lifecycle_stage == "active"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_another_runner_made_meanwhile_is_shared(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = MlflowStore(uri).start_run(run_info("run-a"), retry=False)
    second_store = MlflowStore(uri)
    real_lookup = second_store.client.get_experiment_by_name
    looked: list[str] = []

    def not_there_at_first_look(name: str) -> Any:
        looked.append(name)
        return None if len(looked) == 1 else real_lookup(name)

    monkeypatch.setattr(second_store.client, "get_experiment_by_name", not_there_at_first_look)
    second = second_store.start_run(run_info("run-b"), retry=False)

    assert looked == ["rlhf", "rlhf"]
    assert second.experiment_id == first.experiment_id
    assert [e.name for e in MlflowClient(uri).search_experiments(filter_string=f"tags.`{TAG_PIPELINE}` != ''")] == [
        "rlhf"]


def test_a_node_attempt_replayed_twice_is_logged_once(uri: str) -> None:
    store = MlflowStore(uri)
    parent = store.start_run(run_info("run-node"), retry=False)
    stage_run = store.open_stage("run-node", "sft", 1_700_000_000.0)
    capture = {"key": "runs/run-node/sft/attempt-1/mlflow.json", "runs": [
        {"run_id": stage_run, "run_name": "sft", "parent": None, "start_time": 1000, "end_time": None,
         "metrics": [("loss", 1.0, 1000, 0), ("loss", 0.5, 1001, 1)], "params": {"lr": "0.1"}, "tags": {},
         "artifacts": None}]}

    replay_node_runs(store.client, stage_run, parent.experiment_id, [capture])
    replay_node_runs(store.client, stage_run, parent.experiment_id, [capture])

    history = store.client.get_metric_history(stage_run, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    assert store.client.get_run(stage_run).data.tags["skyflow.node_mlflow.attempt-1"] == "replayed"


# -- declared outputs -----------------------------------------------------------------------------

def _committed(tmp_path: Path, name: str, files: dict[str, str]) -> ArtifactRecord:
    folder = tmp_path / "work" / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return commit_output(open_store(str(tmp_path / "artifacts"), create=True), folder, name=name).record


def test_declared_files_an_output_lacks_are_tagged_missing_and_a_bad_metrics_file_logs_no_metric(
        uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = MlflowStore(uri)
    store.start_run(run_info("run-decl"), retry=False)
    model = _committed(tmp_path, "model", {"eval/report.json": "loss: 0.5 (not JSON)", "w.bin": "w"})
    report = _committed(tmp_path, "report", {"summary.txt": "done"})
    declared = [DeclaredOutput("model", metrics="eval/report.json", artifacts=("plots/*.png",)),
                DeclaredOutput("report", metrics="metrics.json"),
                DeclaredOutput("ghost", metrics="m.json"),
                DeclaredOutput("plain")]
    plain = replace(report, name="plain")
    rec = replace(stage_record("run-decl", "train", [], [model, report, plain]), declared=declared)
    with caplog.at_level(logging.WARNING, logger="skyflow.lineage.mlflow_outputs"):
        run_id = store.record_stage(rec, log_copy=None, retry=False)

    run = store.client.get_run(run_id)
    tags = run.data.tags
    assert tags["skyflow.output.model.missing"] == "plots/*.png"
    assert tags["skyflow.output.report.missing"] == "metrics.json"
    assert tags["skyflow.output.model.digest"] == model.digest
    assert not any(k.startswith(("skyflow.output.ghost", "skyflow.output.plain")) for k in tags)
    assert not any(k.startswith(("loss", "eval")) for k in run.data.metrics)
    assert "metrics file eval/report.json is not JSON" in caplog.text
    assert "stage 'train' declared plots/*.png in output 'model', which it did not write" in caplog.text


def test_a_model_name_the_registry_refuses_is_a_rejection_not_an_outage(uri: str, tmp_path: Path) -> None:
    store = MlflowStore(uri)
    store.start_run(run_info("run-reg"), retry=False)
    model = _committed(tmp_path, "model", {"w.bin": "w"})
    rec = replace(stage_record("run-reg", "train", [], [model]),
                  declared=[DeclaredOutput("model", kind="model", register="team/policy")])
    run_id = store.open_stage("run-reg", "train", 1_700_000_000.0)

    with pytest.raises(MlflowException) as info:
        log_declared_outputs(store.client, run_id, rec, "rlhf")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and is_rejection(info.value)


def test_a_pipeline_name_the_store_refuses_for_an_experiment_is_a_rejection(uri: str) -> None:
    with pytest.raises(MlflowException) as info:
        MlflowStore(uri).start_run(run_info("run-nameless", pipeline=""), retry=False)
    assert is_rejection(info.value)


# -- trace and views ------------------------------------------------------------------------------

def test_a_trace_marks_an_artifact_that_is_its_own_ancestor_and_stops_at_the_depth_asked(uri: str) -> None:
    """A stage whose output has the bytes of its input (nothing to remove) makes the artifact its own producer."""
    store = MlflowStore(uri)
    store.start_run(run_info("run-loop"), retry=False)
    unchanged = replace(RAW, name="prompts_deduped", uri="file:///data/rlhf/prompts_deduped")
    store.record_stage(stage_record("run-loop", "dedupe", [RAW], [unchanged]), log_copy=None, retry=False)
    store.record_stage(stage_record("run-loop", "sft", [RAW], [MODEL]), log_copy=None, retry=False)
    store.record_stage(stage_record("run-loop", "ppo", [MODEL], [POLICY]), log_copy=None, retry=False)

    looped = trace_artifact(uri, RAW.digest)
    assert looped.producer is not None and looped.producer.stage == "dedupe" and looped.note is None
    assert looped.artifact.name == "prompts_deduped"
    (again,) = looped.inputs
    assert again.artifact.digest == RAW.digest and again.note == "cycle: this artifact is its own ancestor"

    shallow = trace_artifact(uri, POLICY.digest, max_depth=1)
    (model,) = shallow.inputs
    assert model.producer is not None and model.producer.stage == "sft"
    assert model.note == "stopped at depth 1" and model.inputs == ()


def test_a_trace_needs_runs_and_a_digest_long_enough(uri: str) -> None:
    with pytest.raises(LineageError, match=r"^MLflow sqlite store .*mlflow\.db holds no skyflow runs yet\.$"):
        trace_artifact(uri, "sha256:" + "a" * 64)
    store = MlflowStore(uri)
    store.start_run(run_info("run-short"), retry=False)
    store.record_stage(stage_record("run-short", "sft", [RAW], [MODEL]), log_copy=None, retry=False)
    with pytest.raises(LineageError, match=r"digest 'sha256:aaaa' is too short: give at least 6 characters\."):
        trace_artifact(uri, "sha256:aaaa")


def test_a_tracking_file_that_is_no_database_is_one_lineage_error(tmp_path: Path) -> None:
    """Read through the MLflow client (the direct reader declines it), the driver's error names the store."""
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(b"these bytes were never a sqlite database, whatever the file is called" * 2)
    with pytest.raises(LineageError) as info:
        trace_artifact(f"sqlite:///{garbage}", "sha256:" + "ab" * 32)
    assert str(info.value) == f"cannot query MLflow sqlite store {garbage}: file is not a database"


def test_skyflow_ui_on_a_tracking_file_that_is_no_database_is_one_lineage_error(tmp_path: Path) -> None:
    """What `skyflow ui` asks first (which experiment to open) fails as one error too, not a traceback."""
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(b"these bytes were never a sqlite database, whatever the file is called" * 2)
    for pipeline in ("rlhf", None):
        with pytest.raises(LineageError) as info:
            pipeline_experiment(f"sqlite:///{garbage}", pipeline)
        assert str(info.value) == f"cannot query MLflow sqlite store {garbage}: file is not a database"


def test_a_dataset_logged_by_other_tools_is_traced_from_its_plain_source_and_digest(uri: str) -> None:
    """A dataset whose source is not skyflow's JSON and whose profile is not JSON is still an artifact:
    its URI is the source as written, its digest MLflow's own."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("etl", tags={TAG_PIPELINE: "etl"})
    run = client.create_run(experiment_id, run_name="export",
                            tags={TAG_KIND: "stage_run", TAG_OUTPUT_URIS: "s3://bucket/plain.csv"})
    dataset = Dataset(name="plain", digest="feedbeef1234", source_type="s3", source="s3://bucket/plain.csv",
                      profile="rows=10")
    client.log_inputs(run.info.run_id, [DatasetInput(dataset, [InputTag(CONTEXT_TAG, "output")])])

    node = trace_artifact(uri, "s3://bucket/plain.csv")
    assert (node.artifact.name, node.artifact.uri, node.artifact.digest, node.artifact.size_bytes) == (
        "plain", "s3://bucket/plain.csv", "feedbeef1234", None)
    assert node.producer is not None and node.producer.stage == "export" and node.producer.git_dirty is None


def test_the_ui_link_finds_a_pipeline_by_name_and_says_which_ones_exist(
        uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = MlflowClient(uri)
    empty_id = client.create_experiment("rlhf", tags={TAG_PIPELINE: "rlhf"})
    client.create_experiment("notebooks")
    assert pipeline_experiment(uri) is None  # a skyflow experiment without a pipeline run yet

    assert pipeline_experiment(uri, "rlhf") == (empty_id, "rlhf")
    with pytest.raises(LineageError, match=r"has no runs of pipeline 'rlfh'; did you mean rlhf\?$"):
        pipeline_experiment(uri, "rlfh")
    with pytest.raises(LineageError, match=r"has no runs of pipeline 'notebooks'; pipelines there: rlhf$"):
        pipeline_experiment(uri, "notebooks")

    def store_failing(*args: Any, **kwargs: Any) -> Any:
        raise MlflowException("database is locked")

    monkeypatch.setattr(MlflowClient, "search_runs", store_failing)
    with pytest.raises(LineageError, match=r"^cannot query MLflow sqlite store .*: database is locked$"):
        pipeline_experiment(uri)


def test_a_run_and_its_resume_sent_out_of_order_end_as_the_resume_ended(uri: str) -> None:
    """Each short run leaves its records to a drain of its own: the failed first run's end (and even its
    start) may reach MLflow after its resume's end. The later end wins whatever order they come in."""
    store = MlflowStore(uri)
    first = replace(run_info("ci-7"), started_at=1_700_000_000.0)
    resumed = replace(first, started_at=1_700_000_100.0)
    store.start_run(resumed, retry=False)
    store.end_run("ci-7", "succeeded", {"actual_usd": 0.5}, ended_at=1_700_000_200.0)
    store.start_run(first, retry=True)  # the first run's start, late: the run stays ended
    store.end_run("ci-7", "failed", {"actual_usd": 0.25}, ended_at=1_700_000_050.0)  # its end, late

    client = MlflowClient(uri)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("rlhf").experiment_id])  # type: ignore[union-attr]
                 if r.data.tags.get(TAG_KIND) == "pipeline_run"]
    assert (parent.info.status, parent.info.end_time) == ("FINISHED", 1_700_000_200_000)
    assert parent.data.tags["skyflow.state"] == "succeeded" and parent.data.metrics["total_actual_usd"] == 0.5

    store.start_run(replace(first, started_at=1_700_000_300.0), retry=False)  # a second resume, later
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"
    store.end_run("ci-7", "failed", {}, ended_at=1_700_000_400.0)
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
