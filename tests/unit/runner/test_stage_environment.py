"""The environment a stage process sees, whole: every variable and value, and which one wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyflow.errors import SpecError
from skyflow.runner.environment import require_envs, secret_values, stage_environment
from skyflow.spec.loader import load_pipeline

PIPELINE = """\
name: tune
envs: {SHARED: from-pipeline, BOTH: pipeline, ASKED: null}
stages:
  prep:
    run: echo prep
    outputs: [rows]
  train:
    run: echo train
    envs: {BOTH: stage, OWN: mine, TOKEN: not-the-secret, LATER: null}
    inputs: {rows: prep.rows}
    outputs: [model, eval_report]
"""


@pytest.fixture
def pipeline(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return load_pipeline(tmp_path / "pipeline.yaml")


def test_every_variable_a_stage_sees_and_which_value_wins(pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = stage_environment(
        pipeline, "train", run_id="tune-1", params={"lr": 0.5, "name": "x", "full": True, "layers": [1, 2]},
        inputs={"rows": tmp_path / "in" / "rows"}, outputs={"model": tmp_path / "out" / "model",
                                                            "eval_report": tmp_path / "out" / "eval"},
        gpus_per_node=2, secrets={"TOKEN": "s3cr3t"}, base_env={"PATH": "/bin", "BOTH": "shell", "SHARED": "shell"},
        num_nodes=3, head_ip="10.0.0.7")
    assert env == {
        "PATH": "/bin",
        "SHARED": "from-pipeline",  # the pipeline's value over the shell's
        "BOTH": "stage",  # the stage's over the pipeline's
        "OWN": "mine",
        "TOKEN": "s3cr3t",  # a secret over a declared value
        "SKYFLOW_PARAM_LR": "0.5", "SKYFLOW_PARAM_NAME": "x", "SKYFLOW_PARAM_FULL": "true",
        "SKYFLOW_PARAM_LAYERS": "[1, 2]",
        "SKYFLOW_INPUT_ROWS": str(tmp_path / "in" / "rows"),
        "SKYFLOW_OUTPUT_MODEL": str(tmp_path / "out" / "model"),
        "SKYFLOW_OUTPUT_EVAL_REPORT": str(tmp_path / "out" / "eval"),
        "SKYFLOW_RUN_ID": "tune-1", "SKYFLOW_STAGE": "train", "SKYFLOW_PIPELINE": "tune",
        "SKYFLOW_PARAMS": json.dumps({"full": True, "layers": [1, 2], "lr": 0.5, "name": "x"}),
        "SKYPILOT_TASK_ID": "skyflow-tune-1-train", "SKYPILOT_NUM_NODES": "3",
        "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.7\n10.0.0.7", "SKYPILOT_HEAD_IP": "10.0.0.7",
        "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NUM_GPUS_PER_NODE": "2", "PYTHONUNBUFFERED": "1",
    }
    # declared without a value: taken from the shell (base_env), never set to a placeholder
    assert "ASKED" not in env and "LATER" not in env


@pytest.mark.parametrize(("gpus", "shown"), [(0, "0"), (0.5, "1"), (1, "1"), (1.5, "1.5"), (8, "8")])
def test_gpus_per_node_as_skypilot_gives_it(pipeline, gpus: float, shown: str) -> None:  # type: ignore[no-untyped-def]
    env = stage_environment(pipeline, "prep", run_id="r", params={}, inputs={}, outputs={}, gpus_per_node=gpus,
                            secrets={}, base_env={}, num_nodes=1)
    assert env["SKYPILOT_NUM_GPUS_PER_NODE"] == shown
    assert env["SKYPILOT_HEAD_IP"] == env["SKYPILOT_NODE_IPS"] == "127.0.0.1"  # one node: this machine
    assert env["SKYFLOW_PARAMS"] == "{}" and env["SHARED"] == "from-pipeline" and "OWN" not in env


def test_an_env_declared_without_a_value_must_be_in_the_shell(pipeline) -> None:  # type: ignore[no-untyped-def]
    require_envs(pipeline, {"ASKED": "1", "LATER": "2"})
    with pytest.raises(SpecError) as missing:
        require_envs(pipeline, {"LATER": "2"})
    assert str(missing.value) == ("ASKED is declared without a value (envs: {ASKED: null}) for stages 'prep', "
                                  "'train'; set it in this shell or pass --env ASKED=VALUE")
    with pytest.raises(SpecError) as both:
        require_envs(pipeline, {})
    assert str(both.value) == (
        "ASKED is declared without a value (envs: {ASKED: null}) for stages 'prep', 'train'; set it in this "
        "shell or pass --env ASKED=VALUE; LATER is declared without a value (envs: {LATER: null}) for stage "
        "'train'; set it in this shell or pass --env LATER=VALUE")


def test_secret_values_are_the_callers_non_empty_ones() -> None:
    assert secret_values(["A", "B", "C"], {"A": "x", "B": "", "D": "y"}) == {"A": "x"}
