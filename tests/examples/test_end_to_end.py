"""Both examples run end to end through `skyflow run` at demo size, and really learn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from tests.examples.conftest import REPO

pytestmark = pytest.mark.examples


class Run:
    """A `skyflow run` of an example against a private SKYFLOW_HOME, and its committed outputs."""

    def __init__(self, home: Path, target: str, *args: str) -> None:
        self.home = home
        env = {**os.environ, "SKYFLOW_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        result = subprocess.run([sys.executable, "-m", "skyflow", "run", target, "--json", "--no-lineage", *args],
                                capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr
        self.status: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        self.env = env

    def output(self, stage: str, output: str, tmp: Path) -> Path:
        ref = self.status["stages"][stage]["outputs"][output]
        store = open_store(ref["uri"].split("/manifests/")[0])
        return fetch_artifact(ArtifactRef(output, ref["uri"], ref["digest"], ref["size_bytes"], 0, store),
                              tmp / f"{stage}-{output}")

    def json(self, stage: str, output: str, name: str, tmp: Path) -> dict[str, Any]:
        return dict(json.loads((self.output(stage, output, tmp) / name).read_text()))

    def log(self, stage: str) -> str:
        return subprocess.run([sys.executable, "-m", "skyflow", "logs", self.status["run_id"], stage],
                              capture_output=True, text=True, env=self.env, check=True).stdout

    def skyflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skyflow", *args], capture_output=True, text=True,
                              env=self.env, check=True)


def test_rlhf_learns(tmp_path: Path) -> None:
    run = Run(tmp_path / "home", "examples/rlhf/pipeline.yaml", "--run-id", "test-run")
    assert {s["state"] for s in run.status["stages"].values()} == {"succeeded"}

    sft = run.json("sft", "model", "metrics.json", tmp_path)
    assert sft["final_loss"] < 0.5 * sft["initial_loss"]
    assert sft["final_heldout_loss"] < 0.5 * sft["history"][0]["heldout_loss"]
    assert "sft step=0 loss=" in run.log("sft")

    reward = run.json("reward", "model", "metrics.json", tmp_path)
    assert reward["heldout_accuracy"] > 0.6
    assert "heldout_accuracy=" in run.log("reward")

    ppo = run.json("ppo", "policy", "metrics.json", tmp_path)
    assert ppo["final_reward"] > ppo["initial_reward"] + 1.0
    assert all(p["kl"] < 15.0 for p in ppo["history"])
    assert "kl=" in run.log("ppo") and "reward=" in run.log("ppo")

    report_dir = run.output("eval", "report", tmp_path)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["ppo"]["mean_reward"] > report["sft"]["mean_reward"]
    assert report["gold_gain"] > 0, "PPO should also raise the raters' hidden score, not only the learned reward"
    assert report["kl_ppo_to_sft"] < 15.0
    assert report["run_id"] == "test-run"
    assert (report_dir / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rlhf_decorated_pipeline_gives_the_same_result(tmp_path: Path) -> None:
    home = tmp_path / "home"
    yaml_run = Run(home, "examples/rlhf/pipeline.yaml")
    python_run = Run(home, "examples/rlhf/pipeline.py:rlhf")
    reports = [r.json("eval", "report", "report.json", tmp_path / str(i)) for i, r in enumerate((yaml_run, python_run))]
    for report in reports:
        report.pop("run_id")
    assert reports[0] == reports[1]


def test_llm_training_learns_and_serves(tmp_path: Path) -> None:
    run = Run(tmp_path / "home", "examples/llm_training/pipeline.yaml")
    assert {s["state"] for s in run.status["stages"].values()} == {"succeeded"}
    try:
        train = run.json("train", "model", "metrics.json", tmp_path)
        assert train["final_valid_loss"] < 0.6 * train["initial_loss"]
        assert "train step=0 loss=" in run.log("train")
        report = run.json("eval", "report", "report.json", tmp_path)
        assert report["perplexity"] < 0.5 * report["unigram_perplexity"] < report["uniform_perplexity"]

        summary = run.skyflow("status", run.status["run_id"]).stdout
        endpoint = re.search(r"serving at (http://127\.0\.0\.1:\d+)", summary)
        assert endpoint, summary
        with urllib.request.urlopen(endpoint.group(1) + "/health", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        request = urllib.request.Request(endpoint.group(1) + "/generate", data=json.dumps(
            {"prompt": "the happy bird", "max_tokens": 8, "temperature": 0.5}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            completion = json.loads(response.read())["completion"]
        assert completion.split()[0] in {"sings", "flies", "nests"}, completion
    finally:
        stopped = run.skyflow("down", run.status["run_id"]).stdout
    assert "stopped serve" in stopped
