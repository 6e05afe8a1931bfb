"""Both examples run stage by stage at demo size and really learn (runner contract, no runner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from skyflow import load_pipeline
from tests.examples.conftest import REPO, free_port, run_stage, stage_env, workdir

pytestmark = pytest.mark.examples


def run_batch_stages(target: str | Path, root: Path) -> dict[str, str]:
    pipeline = load_pipeline(target)
    return {name: run_stage(pipeline, name, root) for name in pipeline.order if not pipeline.stages[name].service}


def metrics(root: Path, stage: str, output: str) -> dict:
    return json.loads((root / stage / output / "metrics.json").read_text())


def test_rlhf_learns(tmp_path: Path) -> None:
    logs = run_batch_stages(REPO / "examples" / "rlhf" / "pipeline.yaml", tmp_path)

    sft = metrics(tmp_path, "sft", "model")
    assert sft["final_loss"] < 0.5 * sft["initial_loss"]
    assert sft["final_heldout_loss"] < 0.5 * sft["history"][0]["heldout_loss"]
    assert "sft step=0 loss=" in logs["sft"]

    reward = metrics(tmp_path, "reward", "model")
    assert reward["heldout_accuracy"] > 0.6
    assert "heldout_accuracy=" in logs["reward"]

    ppo = metrics(tmp_path, "ppo", "policy")
    assert ppo["final_reward"] > ppo["initial_reward"] + 1.0
    assert all(p["kl"] < 15.0 for p in ppo["history"])
    assert "kl=" in logs["ppo"] and "reward=" in logs["ppo"]

    report = json.loads((tmp_path / "eval" / "report" / "report.json").read_text())
    assert report["ppo"]["mean_reward"] > report["sft"]["mean_reward"]
    assert report["gold_gain"] > 0, "PPO should also raise the raters' hidden score, not only the learned reward"
    assert report["kl_ppo_to_sft"] < 15.0
    assert report["run_id"] == "test-run"
    assert (tmp_path / "eval" / "report" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rlhf_decorated_pipeline_gives_the_same_result(tmp_path: Path) -> None:
    run_batch_stages(REPO / "examples" / "rlhf" / "pipeline.yaml", tmp_path / "yaml")
    run_batch_stages(f"{REPO / 'examples' / 'rlhf' / 'pipeline.py'}:rlhf", tmp_path / "python")
    reports = [json.loads((tmp_path / side / "eval" / "report" / "report.json").read_text())
               for side in ("yaml", "python")]
    for report in reports:
        report.pop("run_id")
    assert reports[0] == reports[1]


def test_llm_training_learns_and_serves(tmp_path: Path) -> None:
    path = REPO / "examples" / "llm_training" / "pipeline.yaml"
    logs = run_batch_stages(path, tmp_path)

    train = metrics(tmp_path, "train", "model")
    assert train["final_valid_loss"] < 0.6 * train["initial_loss"]
    assert "train step=0 loss=" in logs["train"]
    report = json.loads((tmp_path / "eval" / "report" / "report.json").read_text())
    assert report["perplexity"] < 0.5 * report["unigram_perplexity"] < report["uniform_perplexity"]
    assert "perplexity=" in logs["eval"]

    pipeline = load_pipeline(path)
    port = free_port()
    env = {**stage_env(pipeline, "serve", tmp_path), "SKYFLOW_SERVICE_PORT": str(port)}
    server = subprocess.Popen(["bash", "-c", f"exec {pipeline.stages['serve'].run}"], cwd=workdir(pipeline, "serve"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_for_health(base + pipeline.stages["serve"].service.readiness_probe.path, server)
        assert health["status"] == "ok"
        request = urllib.request.Request(base + "/generate", data=json.dumps({"prompt": "the happy bird",
                                         "max_tokens": 8, "temperature": 0.5}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            completion = json.loads(response.read())["completion"]
        assert completion.split()[0] in {"sings", "flies", "nests"}, completion
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def wait_for_health(url: str, server: subprocess.Popen, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else "server exited"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")
