"""Lineage against MLflow's in-process sqlite store: the layout, secrets, the trace, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lineage_pipeline import MODEL, POLICY, RAW, REWARD, SECRET, chain_records, run_info, stage_record
from mlflow import MlflowClient

from skyflow.cli.main import main
from skyflow.errors import LineageError
from skyflow.lineage.recorder import open_recorder
from skyflow.lineage.trace import trace_artifact

pytestmark = pytest.mark.integration


def record_chain(home: Path, run_id: str, log_path: Path | None = None) -> str:
    recorder = open_recorder(None, home, [SECRET])
    recorder.start_run(run_info(run_id))
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
    assert parent.data.params["lr"] == "1e-05"
    assert parent.data.params["model.base"] == "llama-3-8b"
    assert parent.data.metrics["total_actual_usd"] == 4.5
    assert "plan.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    rm = children["rm"]
    assert rm.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert rm.data.tags["skyflow.cache_hit"] == "false"
    assert rm.data.tags["skyflow.code_digest"] == "code-rm"
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

    datasets = {(d.dataset.name, d.tags[0].value): d.dataset for d in rm.inputs.dataset_inputs}
    assert set(datasets) == {("model", "input"), ("reward_model", "output")}
    out = datasets[("reward_model", "output")]
    assert json.loads(out.source)["uri"] == REWARD.uri
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


def test_resumed_run_keeps_one_parent_and_one_run_per_stage(home: Path) -> None:
    uri = record_chain(home, "run-resume")
    recorder = open_recorder(None, home, [])
    recorder.start_run(run_info("run-resume"))
    recorder.record_stage(stage_record("run-resume", "rm", [MODEL], [REWARD], attempts=4))
    recorder.end_run("run-resume", "succeeded", {})
    recorder.close()

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rlhf")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["ppo", "rm", "run-resume", "sft"]
    rm = next(r for r in runs if r.info.run_name == "rm")
    assert rm.data.metrics["attempts"] == 4
