"""A short run leaves lineage to a background drain; readers still see every record."""

from __future__ import annotations

import sqlite3

from tests.integration.runner.conftest import Skyflow

PIPELINE = """\
name: quick
stages:
  a: {run: 'echo a > $SKYFLOW_OUTPUT_O/o', outputs: [o]}
  b: {run: 'cat $SKYFLOW_INPUT_I/o > $SKYFLOW_OUTPUT_O/o; echo b >>$SKYFLOW_OUTPUT_O/o', inputs: {i: a.o}, outputs: [o]}
  c: {run: 'cat $SKYFLOW_INPUT_I/o > $SKYFLOW_OUTPUT_O/o; echo c >>$SKYFLOW_OUTPUT_O/o', inputs: {i: b.o}, outputs: [o]}
"""


def test_every_record_reaches_mlflow_and_lineage_sees_it_right_after_the_run(skyflow: Skyflow) -> None:
    skyflow.write("quick.yaml", PIPELINE)
    code, status, _ = skyflow.run_json("quick.yaml", "--run-id", "quick-1")
    assert code == 0
    digest = status["stages"]["c"]["outputs"]["o"]["digest"]
    traced = skyflow("lineage", digest, "--json", check=True).stdout  # waits for the drain first
    assert '"stage": "c"' in traced and '"stage": "a"' in traced
    with sqlite3.connect(skyflow.home / "mlflow.db") as db:
        runs = db.execute("SELECT name, status FROM runs").fetchall()
    assert sorted(runs) == sorted([("quick-1", "FINISHED"), ("a", "FINISHED"), ("b", "FINISHED"),
                                   ("c", "FINISHED")])
    spool = skyflow.home / "lineage-spool"
    assert all(p.stat().st_size == 0 for p in spool.rglob("*.jsonl"))
