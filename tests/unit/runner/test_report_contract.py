"""The JSON that `skyflow run --json` and `skyflow status --json` print for a run: its exact shape, built from
a run read back from a real state DB. Scripts and CI parse it, so every key and default is pinned."""

from __future__ import annotations

import json
from pathlib import Path

from skyflow.artifacts.record import ArtifactRecord
from skyflow.runner.report import run_status_json
from skyflow.runner.state import RunStore

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_a_finished_run_reports_every_stage_with_its_outputs(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    store.create_run("r1", "train", "train.yaml", "digest", {}, {}, None, ["prep", "fit"], None)
    store.finish_stage("r1", "prep", "succeeded",
                       {"data": ArtifactRecord("data", "/store/manifests/a.json", A, 123, "/store", 2),
                        "stats": ArtifactRecord("stats", "/store/manifests/b.json", B, 7, "/store", 1)},
                       attempts=2, infra="aws", cost_usd=1.23456789)
    store.finish_stage("r1", "fit", "failed", {}, attempts=1, cost_usd=0.5)
    store.set_run("r1", state="failed")

    shown = run_status_json(store.get_run("r1"))

    assert shown == {
        "run_id": "r1",
        "pipeline": "train",
        "state": "failed",
        "stages": {
            "prep": {"state": "succeeded", "attempts": 2, "infra": "aws", "cost_usd": 1.234568,
                     "outputs": {"data": {"uri": "/store/manifests/a.json", "digest": A, "size_bytes": 123},
                                 "stats": {"uri": "/store/manifests/b.json", "digest": B, "size_bytes": 7}}},
            "fit": {"state": "failed", "attempts": 1, "infra": "local", "cost_usd": 0.5, "outputs": {}},
        },
    }
    assert list(shown["stages"]) == ["prep", "fit"]
    assert json.loads(json.dumps(shown)) == shown


def test_a_stage_not_yet_run_is_local_and_free(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "state.db")
    store.create_run("r2", "etl", "etl.yaml", "digest", {}, {}, None, ["load"], None)

    assert run_status_json(store.get_run("r2")) == {
        "run_id": "r2", "pipeline": "etl", "state": "running",
        "stages": {"load": {"state": "pending", "attempts": 0, "infra": "local", "cost_usd": 0.0, "outputs": {}}},
    }
