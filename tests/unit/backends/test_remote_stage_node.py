"""The stage wrapper on a node, run in this process against a local store: a failing setup, an empty
output, a node other than the head, the MLflow records carried back (or not), and `main` without a spec
or with an input it cannot fetch; and the words of the error for a remote stage without a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRecord, ArtifactRef, fetch_artifact, open_store
from skyflow.backends.fake import launch_for
from skyflow.backends.node_mlflow import capture_key
from skyflow.backends.remote_stage import SPEC_ENV, main, missing_store_message, read_result, result_key, run_node
from skyflow.planner import Placement


def _spec(store_uri: str, run: str, *, setup: str | None = None, outputs: tuple[str, ...] = ("model",),
          inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"run_id": "r1", "stage": "train", "attempt": 1, "setup": setup, "run": run, "num_nodes": 1,
            "store_uri": store_uri, "result_key": result_key("r1", "train", 1), "inputs": inputs or {},
            "outputs": list(outputs), "workdir": None}


@pytest.fixture
def store_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("SKYPILOT_NODE_RANK", "JOB_COMPLETION_INDEX", "SKYPILOT_HEAD_IP", "SKYPILOT_NODE_IPS",
                 "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "SKYFLOW_NODE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return open_store(str(tmp_path / "store"), create=True).uri


def test_a_failing_setup_stops_the_node_before_run_with_its_exit_code(
        store_uri: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    spec = _spec(store_uri, "touch ran", setup="exit 4")
    assert run_node(spec, tmp_path / "node") == 4
    assert "skyflow: setup failed with exit code 4" in capfd.readouterr().out
    assert not (tmp_path / "node" / "ran").exists()
    assert read_result(store_uri, spec["result_key"]) is None


def test_an_output_the_stage_left_empty_fails_the_node_and_reports_nothing(
        store_uri: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    spec = _spec(store_uri, 'echo weights > "$SKYFLOW_OUTPUT_MODEL/w.txt"', outputs=("model", "metrics"))
    assert run_node(spec, tmp_path / "node") == 1
    assert "skyflow: the stage wrote nothing to output 'metrics'" in capfd.readouterr().out
    assert read_result(store_uri, spec["result_key"]) is None


def test_a_node_other_than_the_head_commits_nothing(store_uri: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")  # an Indexed Job's pod number is the node rank
    spec = _spec(store_uri, 'echo "$SKYPILOT_NODE_RANK" > "$SKYFLOW_OUTPUT_MODEL/rank.txt"; exit 0')
    assert run_node(spec, tmp_path / "node") == 0
    assert (tmp_path / "node" / "outputs" / "model" / "rank.txt").read_text() == "1\n"
    assert read_result(store_uri, spec["result_key"]) is None


def _unreachable_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/runner/mlflow.db")  # the runner's own file
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "7")
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc123")


def test_mlflow_records_of_a_failed_stage_are_still_carried_back(store_uri: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _unreachable_mlflow(monkeypatch, tmp_path)
    run = ('uri="$MLFLOW_TRACKING_URI"; dir="${uri#file://}/$MLFLOW_EXPERIMENT_ID/$MLFLOW_RUN_ID"; '
           'echo "1 0.5 0" > "$dir/metrics/loss"; exit 9')
    assert run_node(_spec(store_uri, run), tmp_path / "node") == 9
    store = open_store(store_uri)
    record = json.loads(store.read_optional(capture_key("r1", "train", 1)) or b"null")
    assert record is not None and record["name"] == "mlflow"
    carried = fetch_artifact(ArtifactRef.open(ArtifactRecord.from_json(record), store=store), tmp_path / "back")
    assert (carried / "mlruns" / "7" / "abc123" / "metrics" / "loss").read_text() == "1 0.5 0\n"


def test_mlflow_records_that_cannot_be_committed_cost_the_metrics_not_the_stage(
        store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    _unreachable_mlflow(monkeypatch, tmp_path)
    spec = _spec(store_uri, 'rm -rf mlflow; echo w > "$SKYFLOW_OUTPUT_MODEL/w.txt"')
    assert run_node(spec, tmp_path / "node") == 0
    assert "skyflow: the stage's MLflow records could not be carried back: " in capfd.readouterr().out
    assert open_store(store_uri).read_optional(capture_key("r1", "train", 1)) is None
    outputs = read_result(store_uri, spec["result_key"])
    assert outputs is not None and set(outputs) == {"model"}


def test_main_without_a_spec_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert main([]) == 2
    assert capsys.readouterr().err == f"skyflow: no stage spec: pass a file or set {SPEC_ENV}\n"


def test_main_with_an_input_it_cannot_fetch_exits_3_with_the_stores_error(
        store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    missing = {"uri": f"{store_uri}/manifests/sha256/{'a' * 64}.json", "digest": "a" * 64, "size_bytes": 3,
               "store_uri": store_uri}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec(store_uri, "touch ran", inputs={"data": missing})))
    monkeypatch.setenv("SKYFLOW_NODE_ROOT", str(tmp_path / "node"))
    assert main([str(spec_file)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("skyflow: ") and "a" * 12 in err
    assert not (tmp_path / "node" / "ran").exists()


def _placement(infra: str, region: str | None) -> Placement:
    return Placement(infra=infra, cloud=infra.split("/")[0], region=region, zone=None, instance_type="m5.large",
                     accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.1, hours=1.0)


def test_a_cloud_named_without_its_region_is_shown_with_it(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "true", stage="sft", placement=_placement("aws", "us-east-1"))
    assert missing_store_message(launch, "skypilot") == (
        "stage 'sft' runs on aws/us-east-1 (skypilot), but the pipeline has no object store there: its artifacts "
        "would go to the local store, on this machine, which the nodes cannot reach. Add one to the pipeline: "
        "`stores: {aws/us-east-1: s3://YOUR-BUCKET/skyflow}` (a `aws:` key serves every aws location)")


def test_a_whole_cloud_needs_no_note_about_other_schemes_or_locations(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "true", stage="sft", placement=_placement("gcp", None))
    assert missing_store_message(launch, "skypilot").endswith(
        "Add one to the pipeline: `stores: {gcp: gs://YOUR-BUCKET/skyflow}`")
