"""Decorated pipelines become the same validated pipeline as YAML, and run through skyflow.exec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.errors import SpecError
from skyflow.exec import stage_arguments
from skyflow.spec.export import dump_pipeline_yaml
from skyflow.spec.loader import load_pipeline

FIXTURE = Path(__file__).parents[2] / "fixtures" / "python" / "rlhf_pipeline.py"
TARGET = f"{FIXTURE}:rlhf"


def test_decorated_pipeline_wires_the_dag_from_values_passed() -> None:
    pipeline = load_pipeline(TARGET)
    assert pipeline.order == ("sft", "reward", "ppo")
    refs = {(e.consumer, e.input_name): e.ref for e in pipeline.edges}
    assert refs == {("sft", "data"): "prefs", ("reward", "data"): "prefs",
                    ("ppo", "policy"): "sft.model", ("ppo", "reward"): "reward.model"}
    sft = pipeline.stages["sft"]
    assert sft.resources.use_spot and sft.resources.accelerators[0].name == "A100"
    assert sft.retries == 2 and sft.estimate.hours == {"A100": 10}
    assert sft.run == f"python -m skyflow.exec {FIXTURE.name}:sft"
    assert sft.envs["SKYFLOW_KWARG_steps"] == "200"  # ${params.steps}, resolved like YAML
    assert not pipeline.stages["reward"].cache and pipeline.stages["ppo"].num_nodes == 2


def test_set_overrides_reach_python_pipelines() -> None:
    assert load_pipeline(TARGET, {"steps": 7}).stages["sft"].envs["SKYFLOW_KWARG_steps"] == "7"


def test_export_round_trips_through_yaml(tmp_path: Path) -> None:
    original = load_pipeline(TARGET)
    exported = tmp_path / "rlhf.yaml"
    exported.write_text(dump_pipeline_yaml(original))
    again = load_pipeline(exported)
    assert again.spec == original.spec
    assert again.edges == original.edges


def test_errors_in_python_pipelines_point_at_the_python_line() -> None:
    with pytest.raises(SpecError, match=r"rlhf_pipeline.py:\d+:1: .*no such accelerator 'A10O'.*A100"):
        load_pipeline(f"{FIXTURE}:broken_accelerator")
    with pytest.raises(SpecError, match=r"rlhf_pipeline.py:46:1: stage 'reward' declares no output 'modle'"):
        load_pipeline(f"{FIXTURE}:broken_output")
    with pytest.raises(SpecError, match=r"'rhlf' is not a @Pipeline.*Did you mean"):
        load_pipeline(f"{FIXTURE}:rhlf")


def test_stage_function_runs_with_inputs_outputs_and_arguments(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    (data / "a.jsonl").write_text("{}")
    env = {**os.environ, "SKYFLOW_INPUT_DATA": str(data), "SKYFLOW_OUTPUT_MODEL": str(out),
           "SKYFLOW_KWARGS": '{"lr": 0.5}', "SKYFLOW_KWARG_steps": "7"}
    subprocess.run([sys.executable, "-m", "skyflow.exec", f"{FIXTURE.name}:sft"], cwd=FIXTURE.parent,
                   env=env, check=True)
    assert (out / "weights.txt").read_text() == "steps=7 lr=0.5 files=['a.jsonl']"


def test_stage_arguments_parse_param_values_by_type(tmp_path: Path) -> None:
    def fn(data: Path, outputs: dict[str, Path], steps: int, name: str, flag: bool) -> None: ...

    env = {"SKYFLOW_INPUT_DATA": "/d", "SKYFLOW_OUTPUT_MODEL": "/m", "SKYFLOW_KWARG_steps": "3",
           "SKYFLOW_KWARG_flag": "true", "SKYFLOW_KWARGS": '{"name": "x"}'}
    args = stage_arguments(fn, env)
    assert args == {"data": Path("/d"), "outputs": {"model": Path("/m")}, "steps": 3, "flag": True, "name": "x"}
