"""`skyflow validate | dag | export | --version` behave as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.cli.cli_helpers import run

PIPELINE = """\
name: rlhf
params: {ppo_steps: 200}
inputs: {prefs: {uri: s3://datasets/prefs/, infra: aws/us-east-1, size_gb: 40}}
stages:
  sft: {run: 'python sft.py', inputs: {data: prefs}, outputs: {model: {size_gb: 30}},
        resources: {accelerators: A100:8}}
  reward: {run: 'python rm.py', inputs: {data: prefs}, outputs: [model]}
  ppo: {run: 'python ppo.py --steps ${params.ppo_steps}', inputs: {policy: sft.model, reward: reward.model}}
  eval: {run: 'python eval.py', depends_on: [ppo]}
"""


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


def test_validate_ok(pipeline_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", str(pipeline_file)], capsys)
    assert code == 0 and "ok — pipeline 'rlhf', 4 stages, 5 edges" in out


def test_dag_formats(pipeline_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, text, _ = run(["dag", str(pipeline_file)], capsys)
    assert text.index("  sft") < text.index("  ppo") < text.index("  eval")
    assert "<- policy: sft.model" in text and "after ppo" in text
    _, mermaid, _ = run(["dag", str(pipeline_file), "--format", "mermaid"], capsys)
    assert mermaid.startswith("flowchart LR") and "sft -->|model| ppo" in mermaid and "ppo -.-> eval" in mermaid
    _, dot, _ = run(["dag", str(pipeline_file), "--format", "dot"], capsys)
    assert dot.startswith('digraph "rlhf"') and '"sft" -> "ppo" [label="model"];' in dot


def test_set_changes_params(pipeline_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["export", str(pipeline_file), "--set", "ppo_steps=50"], capsys)
    # the new default is written, and the stage still reads the param (so `run --set` works on the export)
    assert code == 0 and "--steps ${params.ppo_steps}" in out and "ppo_steps: 50" in out
    code, _, err = run(["validate", str(pipeline_file), "--set", "ppo_step=50"], capsys)
    assert code == 2 and "Did you mean ppo_steps" in err


def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["valdate", "x"], capsys)
    assert code == 2 and "Did you mean validate" in err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "no such file" in err and "Traceback" not in err


def test_version_and_help_in_a_real_process() -> None:
    exe = [sys.executable, "-m", "skyflow"]
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("skyflow ")
    for command in ([], ["validate"], ["dag"], ["export"]):
        result = subprocess.run([*exe, *command, "--help"], capture_output=True, text=True, check=True)
        assert "Usage:" in result.stdout
