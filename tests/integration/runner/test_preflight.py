"""A stage placed on remote nodes with no object store they can reach is refused before anything runs."""

from __future__ import annotations

import json

import pytest

from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration


def test_a_cluster_stage_without_a_reachable_store_stops_the_run_before_it_starts(skyflow: Skyflow) -> None:
    skyflow.home.mkdir(parents=True, exist_ok=True)
    (skyflow.home / "config.yaml").write_text(
        "kubernetes:\n  contexts:\n    lab: {infra: aws/us-east-1, image_has_skyflow: true}\n")
    marker = skyflow.workdir / "prep-ran"
    skyflow.write("p.yaml", f"name: p\nstages:\n  prep:\n    run: touch {marker}\n    outputs: [rows]\n"
                  "    resources: {infra: local}\n  train:\n    run: echo train\n    inputs: {rows: prep.rows}\n"
                  "    resources: {infra: kubernetes/lab}\n")
    result = skyflow("run", "p.yaml", "--no-lineage")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "stage 'train' runs on kubernetes/lab" in result.stderr
    assert "stores: {aws/us-east-1: s3://YOUR-BUCKET/skyflow}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()  # the local stage before it never ran
    assert json.loads(skyflow("runs", "--json", check=True).stdout) == []
