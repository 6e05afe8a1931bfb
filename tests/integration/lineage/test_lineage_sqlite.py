"""Lineage against MLflow's in-process sqlite store: the layout, secrets, the trace, resume, stage runs
opened as stages start, and run ids used twice."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from skyflow.cli.main import main
from skyflow.errors import LineageError
from skyflow.lineage.recorder import open_recorder, stage_run_environment
from skyflow.lineage.trace import trace_artifact
from tests.integration.lineage.lineage_pipeline import (
    MODEL,
    POLICY,
    RAW,
    REWARD,
    SECRET,
    chain_records,
    run_info,
    stage_record,
)

pytestmark = pytest.mark.integration


def record_chain(home: Path, run_id: str, log_path: Path | None = None, run_key: str = "") -> str:
    recorder = open_recorder(None, home, [SECRET])
    recorder.start_run(run_info(run_id, run_key=run_key))
    for rec in chain_records(run_id, log_path):
        recorder.record_stage(rec)
    recorder.end_run(run_id, "succeeded", {"actual_usd": 4.5, "estimated_usd": 3.75, "note": f"ok {SECRET}"})
    assert recorder.flush(60), recorder.last_error  # type: ignore[attr-defined]
    recorder.close()
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def test_layout_experiment_parent_and_stage_runs(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "sft.log"
    log.write_text(f"step 1 loss=0.5\nexport WANDB_API_KEY={SECRET}\ndone\n")
    uri = record_chain(home, "run-1", log)
    client = MlflowClient(uri)

    experiment = client.get_experiment_by_name("rlhf")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("skyflow.kind") == "pipeline_run"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("skyflow.kind") == "stage_run"}
    assert len(parents) == 1 and set(children) == {"sft", "rm", "ppo"}
    parent = parents[0]

    assert parent.info.status == "FINISHED"
    assert parent.data.tags["skyflow.run_id"] == "run-1"
    assert parent.data.tags["skyflow.git_commit"] == "0123456789abcdef"
    assert parent.data.tags["skyflow.git_dirty"] == "true"
    assert parent.data.tags["skyflow.pipeline_digest"] == "pd-1234"
    assert parent.data.tags["skyflow.version"] == "0.1.0"
    assert parent.data.tags["skyflow.code_digest"] == "code-42"
    assert parent.data.tags["mlflow.user"] == "ada"
    assert parent.data.tags["mlflow.source.name"] == "/pipelines/rlhf/pipeline.yaml"
    assert parent.data.tags["mlflow.source.type"] == "PROJECT"
    assert parent.data.tags["mlflow.source.git.commit"] == "0123456789abcdef"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's model-training view
    assert parent.data.params["lr"] == "1e-05"
    assert parent.data.params["model.base"] == "llama-3-8b"
    assert parent.data.metrics["total_actual_usd"] == 4.5
    assert "plan.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    rm = children["rm"]
    assert rm.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert rm.data.tags["skyflow.cache_hit"] == "false"
    assert rm.data.tags["skyflow.code_digest"] == "code-rm"
    assert rm.data.tags["skyflow.cache_key"] == "key-rm"
    assert rm.data.tags["mlflow.user"] == "ada" and rm.data.tags["mlflow.source.type"] == "PROJECT"
    assert rm.data.params["placement.region"] == "us-east-1"
    assert rm.data.params["placement.use_spot"] == "True"
    assert rm.data.params["resources.accelerators.H100"] == "8"
    assert rm.data.metrics["duration_s"] == 12.5
    assert rm.data.metrics["estimated_usd"] == 1.25
    assert rm.data.metrics["actual_usd"] == 1.5
    assert rm.data.metrics["egress_gb"] == 0.5
    assert rm.data.metrics["egress_usd"] == 0.045
    assert rm.data.metrics["retries"] == 2
    assert rm.data.metrics["output_bytes.reward_model"] == 200

    assert rm.inputs is not None
    datasets = {(d.dataset.name, d.tags[0].value): d.dataset for d in rm.inputs.dataset_inputs}
    assert set(datasets) == {("model", "input"), ("reward_model", "output")}
    out = datasets[("reward_model", "output")]
    assert json.loads(out.source)["uri"] == REWARD.uri
    assert out.profile is not None
    assert json.loads(out.profile)["digest"] == REWARD.digest
    assert out.digest == "b" * 36
    # Lineage is queryable in MLflow itself.
    found = client.search_runs([experiment.experiment_id], f"dataset.digest = '{'b' * 36}'")
    assert {r.info.run_name for r in found} == {"rm", "ppo"}

    sft_logs = client.list_artifacts(children["sft"].info.run_id, "logs")
    assert [a.path for a in sft_logs] == ["logs/sft.log"]
    copy = Path(client.download_artifacts(children["sft"].info.run_id, "logs/sft.log", str(tmp_path)))
    assert copy.read_text() == "step 1 loss=0.5\nexport WANDB_API_KEY=***\ndone\n"


def test_no_secret_reaches_the_store(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "sft.log"
    log.write_bytes(b"\xff\xfe binary " + SECRET.encode() + b" tail\n")
    record_chain(home, "run-secret", log)
    written = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any(p.name == "sft.log" for p in written)
    leaks = [p for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_trace_back_to_raw_data(home: Path) -> None:
    uri = record_chain(home, "run-trace")

    node = trace_artifact(uri, POLICY.digest)
    assert node.producer is not None and node.producer.stage == "ppo"
    assert node.producer.run_id == "run-trace" and node.producer.git_commit == "0123456789abcdef"
    assert [(c.artifact.name, c.producer.stage if c.producer else None) for c in node.inputs] == [
        ("model", "sft"),
        ("reward_model", "rm"),
    ]
    sft = node.inputs[0]
    assert sft.inputs[0].artifact == RAW and sft.inputs[0].producer is None
    assert node.inputs[1].inputs[0].artifact == MODEL

    by_uri = trace_artifact(uri, REWARD.uri)
    assert by_uri.producer is not None and by_uri.producer.stage == "rm"
    by_prefix = trace_artifact(uri, "sha256:aaaaaaaa")
    assert by_prefix.producer is not None and by_prefix.producer.stage == "sft"
    with pytest.raises(LineageError, match=r"no skyflow stage .* wrote an artifact with digest 'sha256:dddddddd'"):
        trace_artifact(uri, "sha256:dddddddd")


def test_trace_prefers_the_run_that_really_made_it(home: Path) -> None:
    uri = record_chain(home, "run-a")
    recorder = open_recorder(None, home, [])
    recorder.start_run(run_info("run-b"))
    recorder.record_stage(stage_record("run-b", "sft", [RAW], [MODEL], cache_hit=True))
    recorder.close()

    node = trace_artifact(uri, MODEL.digest)
    assert node.producer is not None
    assert (node.producer.run_id, node.producer.cache_hit) == ("run-a", False)


def test_lineage_command_prints_the_tree(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record_chain(home, "run-cli")
    main(["lineage", POLICY.uri])
    out = capsys.readouterr().out
    for expected in ("policy", "made by stage ppo", "made by stage rm", "made by stage sft", "raw data"):
        assert expected in out
    main(["lineage", POLICY.digest, "--json"])
    tree = json.loads(capsys.readouterr().out)
    assert tree["producer"]["stage"] == "ppo" and tree["inputs"][0]["inputs"][0]["producer"] is None

    with pytest.raises(SystemExit) as exit_info:
        main(["lineage", "file:///nowhere/x"])
    assert exit_info.value.code == 1
    assert "no skyflow stage" in capsys.readouterr().err


def all_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Every run of the experiment, deleted ones included."""
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def test_a_resume_adds_to_its_parent_and_keeps_the_earlier_stage_run(home: Path) -> None:
    uri = record_chain(home, "run-resume", run_key="key-resume")
    client = MlflowClient(uri)
    first_rm = next(r for r in all_runs(client, "rlhf") if r.info.run_name == "rm")

    recorder = open_recorder(None, home, [])
    recorder.start_run(run_info("run-resume", run_key="key-resume"))
    recorder.record_stage(stage_record("run-resume", "rm", [MODEL], [REWARD], attempts=4))
    recorder.end_run("run-resume", "succeeded", {})
    recorder.close()

    runs = all_runs(client, "rlhf")
    assert all(r.info.lifecycle_stage == "active" for r in runs)  # nothing deleted
    assert sorted(r.info.run_name for r in runs) == ["ppo", "rm", "rm", "run-resume", "sft"]
    rms = {r.info.run_id: r for r in runs if r.info.run_name == "rm"}
    second_rm = next(r for run_id, r in rms.items() if run_id != first_rm.info.run_id)
    assert rms[first_rm.info.run_id].data.tags["skyflow.superseded_by"] == second_rm.info.run_id
    assert "skyflow.superseded_by" not in second_rm.data.tags
    assert second_rm.data.metrics["attempts"] == 4
    parent = next(r for r in runs if r.info.run_name == "run-resume")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r != parent} == {parent.info.run_id}
    # the trace follows the current stage run, not the one the resume replaced
    node = trace_artifact(uri, REWARD.digest)
    assert node.producer is not None and node.producer.mlflow_run_id == second_rm.info.run_id


def test_a_run_id_used_again_elsewhere_gets_its_own_parent_and_deletes_nothing(home: Path) -> None:
    uri = record_chain(home, "ci-1", run_key="machine-a")
    client = MlflowClient(uri)
    before = {r.info.run_id: (r.info.status, r.info.end_time) for r in all_runs(client, "rlhf")}

    record_chain(home, "ci-1", run_key="machine-b")  # the same --run-id from another SKYFLOW_HOME
    runs = all_runs(client, "rlhf")
    assert all(r.info.lifecycle_stage == "active" for r in runs)
    assert {r.info.run_id: (r.info.status, r.info.end_time) for r in runs if r.info.run_id in before} == before
    parents = [r for r in runs if r.data.tags.get("skyflow.kind") == "pipeline_run"]
    assert sorted(p.data.tags["skyflow.run_key"] for p in parents) == ["machine-a", "machine-b"]
    newer = next(p for p in parents if p.data.tags["skyflow.run_key"] == "machine-b")
    older = next(p for p in parents if p.data.tags["skyflow.run_key"] == "machine-a")
    assert newer.data.tags["skyflow.run_id_used_before_by"] == older.info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == newer.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["ppo", "rm", "sft"]


STAGE_CODE = """
import json, os, sys
seen = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
import mlflow
for step in range(3):
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
mlflow.log_param("lr", "0.01")
json.dump(seen, open(sys.argv[1], "w"))
"""


def test_a_stage_run_opened_at_start_takes_the_stage_codes_own_metrics(home: Path, tmp_path: Path) -> None:
    recorder = open_recorder(None, home, [])
    recorder.start_run(run_info("run-open", run_key="key-open"))
    opened = recorder.open_stage("run-open", "sft")
    assert opened is not None
    env = stage_run_environment(opened, remote=False)
    # the stage's own code, in its own process, with only what the runner gives it
    subprocess.run([sys.executable, "-c", STAGE_CODE, str(tmp_path / "seen.json")], check=True,
                   env={**os.environ, **env})
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"MLFLOW_TRACKING_URI": opened.tracking_uri, "MLFLOW_EXPERIMENT_ID": opened.experiment_id,
                    "MLFLOW_RUN_ID": opened.run_id}
    ended = time.time()
    recorder.record_stage(dataclasses.replace(stage_record("run-open", "sft", [RAW], [MODEL]),
                                              mlflow_run_id=opened.run_id, started_at=ended - 5, ended_at=ended))
    recorder.end_run("run-open", "succeeded", {})
    assert recorder.flush(60), recorder.last_error  # type: ignore[attr-defined]
    recorder.close()

    client = MlflowClient(opened.tracking_uri)
    sft = client.get_run(opened.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(opened.run_id, "loss")] == [
        (0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert sft.data.params["lr"] == "0.01" and sft.data.params["placement.region"] == "us-east-1"
    assert sft.data.metrics["duration_s"] == 12.5 and sft.data.tags["skyflow.stage"] == "sft"
    assert sft.info.status == "FINISHED" and sft.info.end_time == int(ended * 1000)
    stage_runs = [r for r in all_runs(client, "rlhf") if r.data.tags.get("skyflow.kind") == "stage_run"]
    assert [r.info.run_id for r in stage_runs] == [opened.run_id]  # the record made no second run


def test_a_remote_node_gets_no_variables_for_a_store_only_this_machine_can_reach() -> None:
    from skyflow.lineage.records import StageRun

    local = StageRun("sqlite:////home/me/.skyflow/mlflow.db", "1", "abc")
    assert stage_run_environment(local, remote=False)["MLFLOW_RUN_ID"] == "abc"
    assert stage_run_environment(local, remote=True) == {}
    assert stage_run_environment(dataclasses.replace(local, tracking_uri="http://127.0.0.1:5000"), remote=True) == {}
    server = dataclasses.replace(local, tracking_uri="https://mlflow.internal:443")
    assert stage_run_environment(server, remote=True)["MLFLOW_TRACKING_URI"] == "https://mlflow.internal:443"
    assert stage_run_environment(None, remote=False) == {}
