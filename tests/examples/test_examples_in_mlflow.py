"""Both examples with lineage on: their stage code logs the training curves into the stage runs, the
trained model becomes a registered version, the eval report (and plot) land on the eval run, and the
LLM service names the version it serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.examples.conftest import REPO

pytestmark = pytest.mark.examples


def skyflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYFLOW_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "skyflow", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)


def run_with_lineage(home: Path, pipeline: str, run_id: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The run's status JSON, a client on its lineage store, and its stage runs by stage."""
    from mlflow import MlflowClient

    # --wait-for-lineage: a run shorter than the drain's start-up (5 s) hands its last records to the
    # background drain and returns; what is read below must not race it.
    result = skyflow(home, "run", pipeline, "--json", "--run-id", run_id, "--wait-for-lineage")
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout.splitlines()[-1])
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(status["pipeline"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`skyflow.kind` = 'stage_run'")
    return status, client, {r.info.run_name: r for r in runs}


def test_rlhf_logs_its_curves_and_registers_its_policy(tmp_path: Path) -> None:
    status, client, stages = run_with_lineage(tmp_path / "home", "examples/rlhf/pipeline.yaml", "rlhf-mlflow")
    assert set(stages) == {"sft", "reward", "ppo", "eval"}

    def curve(stage: str, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(stages[stage].info.run_id, metric)]

    sft_loss = curve("sft", "loss")
    assert sft_loss[0][0] == 0 and sft_loss[-1][0] == 150 and sft_loss[-1][1] < 0.5 * sft_loss[0][1]
    assert curve("reward", "heldout_accuracy")[-1][1] > 0.6
    reward, kl = curve("ppo", "reward"), curve("ppo", "kl")
    assert len(reward) == len(kl) == 17 and reward[-1][1] > reward[0][1] + 1.0  # demo: step 0, 5, ..., 80

    ppo = stages["ppo"]
    [version] = client.search_model_versions("name = 'rlhf-policy'")
    assert version.run_id == ppo.info.run_id and version.tags["skyflow.run_id"] == "rlhf-mlflow"
    assert version.tags["skyflow.digest"] == status["stages"]["ppo"]["outputs"]["policy"]["digest"]
    assert {a.path for a in client.list_artifacts(ppo.info.run_id, "policy")} >= {"policy/metrics.json"}

    evaluation = stages["eval"]
    assert 0.9 < evaluation.data.metrics["ppo_win_rate"] <= 1.0
    assert evaluation.data.metrics["reward_gain"] > 1.0
    assert "plot.png" in {a.path for a in client.list_artifacts(evaluation.info.run_id)}


def test_llm_training_registers_the_model_its_service_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, client, stages = run_with_lineage(home, "examples/llm_training/pipeline.yaml", "llm-mlflow")
    try:
        assert set(stages) == {"prep", "train", "eval", "serve"}
        loss = [m.value for m in client.get_metric_history(stages["train"].info.run_id, "valid_loss")]
        assert len(loss) > 5 and loss[-1] < 0.6 * loss[0]
        assert stages["eval"].data.metrics["perplexity"] < stages["eval"].data.metrics["unigram_perplexity"]
        [version] = client.search_model_versions("name = 'tinylm'")
        assert version.run_id == stages["train"].info.run_id

        summary = skyflow(home, "status", "llm-mlflow").stdout
        endpoint = re.search(r"serving at (http://127\.0\.0\.1:\d+)", summary)
        assert endpoint, summary
        named = None
        deadline = time.monotonic() + 120
        while named is None and time.monotonic() < deadline:
            with urllib.request.urlopen(endpoint.group(1) + "/health", timeout=10) as response:
                named = json.loads(response.read()).get("model_version")
            time.sleep(0.5)
        assert named == f"tinylm/{version.version}"
        assert client.get_run(stages["serve"].info.run_id).data.tags["skyflow.serves"] == named
    finally:
        stopped = skyflow(home, "down", "llm-mlflow").stdout
    assert "stopped serve" in stopped
