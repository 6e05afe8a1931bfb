"""The Python API runs pipelines through the same Session as the CLI: a decorated pipeline's `.run()`,
`skyflow.run` on a YAML file, results read back as local paths, and the CLI resuming what Python started."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import skyflow
from skyflow.errors import RunError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "python"
pytestmark = pytest.mark.integration


def _module(tmp_path: Path) -> ModuleType:
    """A private copy of the fixture pipeline (its data beside it), imported as a module."""
    folder = tmp_path / "pipeline"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("rlhf_pipeline.py", "__pycache__"))
    spec = importlib.util.spec_from_file_location(f"local_pipeline_{tmp_path.name}", folder / "local_pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("SKYFLOW_HOME", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


def test_a_decorated_pipeline_runs_from_python_and_its_outputs_open_as_paths(home: Path, tmp_path: Path) -> None:
    pipeline = _module(tmp_path).local_py
    plan = pipeline.plan()
    assert isinstance(plan, skyflow.Plan) and {p.infra for p in plan.stages.values()} == {"local"}
    result = pipeline.run(scale=3)
    assert result.ok and result.state == "succeeded"
    assert {n: s.state for n, s in result.run.stages.items()} == {"prepare": "succeeded", "train": "succeeded"}
    model = result.open("train", "model")
    assert (model / "model.txt").read_text() == "trained on 3 rows\n"
    rows = (result.open("prepare", "rows", tmp_path / "rows") / "rows.txt").read_text().split()
    assert rows == ["alphaalphaalpha", "betabetabeta", "gammagammagamma"]
    with pytest.raises(RunError, match="no output 'weights'; outputs: model"):
        result.open("train", "weights")
    # the run is in the same state DB the CLI reads, recorded with the target it can be resumed from
    assert result.run.target.endswith("local_pipeline.py:local_py")
    assert json.loads(json.dumps(result.run.plan))["stages"]["train"]["store_uri"] == str(home / "artifacts")


def test_a_second_run_with_the_same_params_is_served_from_cache(home: Path, tmp_path: Path) -> None:
    pipeline = _module(tmp_path).local_py
    assert pipeline.run().ok
    again = pipeline.run()
    assert {n: s.state for n, s in again.run.stages.items()} == {"prepare": "cached", "train": "cached"}
    changed = pipeline.run(scale=5)
    assert changed.run.stages["prepare"].state == "succeeded"


def test_skyflow_run_takes_a_yaml_file_and_the_cli_resumes_a_python_run(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "yaml"
    folder.mkdir()
    marker = folder / "fail-once"
    marker.write_text("")
    (folder / "pipeline.yaml").write_text(
        "name: two\nstages:\n"
        "  a: {run: 'echo a > $SKYFLOW_OUTPUT_OUT/a.txt', outputs: [out]}\n"
        f"  b: {{run: 'test ! -e {marker} || {{ rm {marker}; exit 3; }}; cat $SKYFLOW_INPUT_X/a.txt', "
        "inputs: {x: a.out}}\n")
    failed = skyflow.run(str(folder / "pipeline.yaml"), infra="local", lineage=False)
    assert failed.state == "failed" and failed.run.stages["a"].state == "succeeded"
    resumed = subprocess.run([sys.executable, "-m", "skyflow", "resume", failed.run_id, "--json"],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(resumed.stdout)
    assert status["state"] == "succeeded" and status["stages"]["b"]["state"] == "succeeded"
    assert status["stages"]["a"]["attempts"] == 1  # committed outputs were reused, not recomputed


def test_a_run_id_is_checked_before_anything_is_planned(home: Path, tmp_path: Path) -> None:
    pipeline = _module(tmp_path).local_py
    with pytest.raises(RunError, match="run id 'bad id' is not allowed"):
        pipeline.run.__self__ and skyflow.run(pipeline, run_id="bad id", infra="nowhere")
    assert skyflow.run(pipeline, run_id="first", lineage=False).ok
    with pytest.raises(RunError, match="a run named 'first' exists already"):
        skyflow.run(pipeline, run_id="first", infra="nowhere")
