"""Four first runs on a fresh SKYFLOW_HOME, lineage on: every run's lineage reaches the store.

The embedded sqlite store does not exist when the four start, so all four create its schema at the
same moment. Each run's pipeline run and stage runs must be in MLflow once the runs (and any drain
they handed their spool to) are done, no spool file may keep records, and the schema must be whole
(no `_alembic_tmp_*` table left by two migrations racing).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from skyflow.lineage.mlflow_names import TAG_KIND, TAG_RUN_ID, TAG_STAGE
from tests.integration.runner.conftest import Skyflow

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("reliability")]

RUNS = 4
PIPELINE = """\
name: first
stages:
  prep:
    run: 'echo "$SKYFLOW_RUN_ID" > $SKYFLOW_OUTPUT_O/o'
    outputs: [o]
  train:
    inputs: {p: prep.o}
    run: 'cat $SKYFLOW_INPUT_P/o > $SKYFLOW_OUTPUT_O/o'
    outputs: [o]
"""


def spooled_records(home: Path) -> list[Path]:
    return [p for p in (home / "lineage-spool").rglob("*.jsonl") if p.stat().st_size > 0]


def test_four_first_runs_at_once_each_deliver_their_lineage(skyflow: Skyflow) -> None:
    skyflow.write("first.yaml", PIPELINE)
    assert not (skyflow.home / "mlflow.db").exists()
    runs = [skyflow.start("run", "first.yaml", "--run-id", f"first-{i}", "--infra", "local", "--no-cache")
            for i in range(RUNS)]
    outputs = [proc.communicate(timeout=300) for proc in runs]
    for proc, (out, err) in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "lineage: " in out and "not recorded" not in out, out
        assert "Traceback" not in err, err

    deadline = time.monotonic() + 120  # a run may leave its last records to a drain it started
    while spooled_records(skyflow.home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not spooled_records(skyflow.home), [p.read_text()[:500] for p in spooled_records(skyflow.home)]

    db = skyflow.home / "mlflow.db"
    with sqlite3.connect(db) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert not [t for t in tables if t.startswith("_alembic_tmp")], tables
    assert len(versions) == 1, versions

    client = MlflowClient(f"sqlite:///{db}")
    experiments = client.search_experiments()
    found = [r for e in experiments for r in client.search_runs([e.experiment_id], max_results=1000)]
    for i in range(RUNS):
        mine = [r for r in found if r.data.tags.get(TAG_RUN_ID) == f"first-{i}"]
        kinds = sorted((r.data.tags.get(TAG_KIND), r.data.tags.get(TAG_STAGE, "")) for r in mine)
        assert kinds == [("pipeline_run", ""), ("stage_run", "prep"), ("stage_run", "train")], (i, kinds)
        assert all(r.info.status == "FINISHED" for r in mine), [(r.info.run_name, r.info.status) for r in mine]
