"""What a stage declares about its outputs for MLflow: how it is written, where a mistake is shown,
and which numbers of a metrics file become metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyflow.errors import SpecError
from skyflow.lineage.mlflow_outputs import metric_points
from skyflow.lineage.recorder import reachable_elsewhere
from skyflow.lineage.records import DeclaredOutput, StageRecord
from skyflow.spec.loader import load_pipeline

STAGE = "name: x\nstages:\n  train:\n    run: train\n    outputs:\n      model: {body}\n"


def _load(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(STAGE.format(body=body))
    return path


def test_a_model_output_with_its_registry_name_metrics_and_plots(tmp_path: Path) -> None:
    path = _load(tmp_path, "{kind: model, register: rlhf-policy, metrics: eval/report.json, artifacts: plot.png}")
    spec = load_pipeline(path).stages["train"].outputs["model"]
    assert (spec.kind, spec.registered_model, spec.metrics, spec.artifacts) == (
        "model", "rlhf-policy", "eval/report.json", ("plot.png",))
    plain = load_pipeline(_load(tmp_path, "{size_gb: 3}")).stages["train"].outputs["model"]
    assert (plain.kind, plain.registered_model, plain.metrics, plain.artifacts) == ("data", None, None, ())


@pytest.mark.parametrize(("body", "col", "fragments"), [
    ("{register: rlhf-policy}", 25, ("register needs kind: model", "Add kind: model")),
    ("{kind: model, register: 'team/policy'}", 38, ("registered model name", "'team/policy'")),
    ("{kind: weights}", 21, ("kind", "'weights'")),
    ("{metrics: ../report.json}", 24, ("metrics names a file inside the output's folder", "'../report.json'")),
    ("{artifacts: [plot.png, /etc/passwd]}", 26, ("artifacts lists files inside the output", "'/etc/passwd'")),
    ("{kind: model, model_name: p}", 28, ("unknown field 'model_name'", "register: NAME")),
], ids=["register-on-data", "bad-model-name", "unknown-kind", "metrics-outside", "artifact-outside", "misnamed"])
def test_mistakes_are_shown_where_they_are(tmp_path: Path, body: str, col: int, fragments: tuple[str, ...]) -> None:
    path = _load(tmp_path, body)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert f"{path}:6:{col}:" in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_numbers_of_a_metrics_file_become_metrics_and_lists_of_objects_become_steps() -> None:
    report = {"win_rate": 0.976, "passed": True, "name": "eval", "ppo": {"mean_reward": 3.5, "examples": ["a b"]},
              "history": [{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25, "note": "x"}],
              "nan": float("nan")}
    assert metric_points(report) == [("win_rate", 0.976, 0), ("ppo.mean_reward", 3.5, 0),
                                     ("history.loss", 0.5, 10), ("history.loss", 0.25, 20)]
    assert metric_points([{"acc": 0.5}, {"acc": 0.75}]) == [("acc", 0.5, 0), ("acc", 0.75, 1)]
    assert metric_points([1, 2, 3]) == [] and metric_points("text") == []


def test_declared_outputs_travel_through_the_spool_as_json() -> None:
    rec = StageRecord("r", "train", "succeeded", 1, {}, {}, 1.0, None, None, 0.0, 0.0, False,
                      declared=[DeclaredOutput("model", "model", "p", "m.json", ("a.png",))], started_at=1.0,
                      ended_at=2.0, mlflow_run_id="abc", run_key="k", record_id="id")
    assert StageRecord.from_json(rec.to_json()) == rec


def test_which_stores_another_machine_can_reach() -> None:
    assert not reachable_elsewhere("sqlite:////home/me/.skyflow/mlflow.db")
    assert not reachable_elsewhere("./mlruns") and not reachable_elsewhere("file:///tmp/mlruns")
    assert not reachable_elsewhere("http://127.0.0.1:5000") and not reachable_elsewhere("http://localhost:5000")
    assert reachable_elsewhere("https://mlflow.internal") and reachable_elsewhere("postgresql://db.internal/mlflow")
