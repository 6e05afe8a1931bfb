"""Past run times price later plans only for the same work: the same pipeline and stage, the same
command after params, on the same kind of machine. A local demo never prices a cloud plan."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

PIPELINE = """\
name: {name}
params: {{scale: demo, seed: 0}}
stages:
  train:
    resources:
      any_of:
        - {{accelerators: A100:8}}
        - {{infra: local}}
    run: echo training at ${{params.scale}} size
    estimate: {{hours: {{A100: 10}}}}
"""


def _plan(skyflow: Skyflow, *args: str) -> dict[str, Any]:
    result = skyflow("plan", *args, "--json", "--no-cache", check=True)
    train: dict[str, Any] = dict(json.loads(result.stdout))["stages"]["train"]
    return train


def test_a_measured_run_prices_the_same_work_here_and_nothing_else(skyflow: Skyflow) -> None:
    skyflow.write("hist.yaml", PIPELINE.format(name="hist"))
    skyflow.write("other.yaml", PIPELINE.format(name="other"))
    before = _plan(skyflow, "hist.yaml")
    assert (before["infra"], before["hours"], before["hours_source"]) == ("local", 1.0, "fallback")
    skyflow("run", "hist.yaml", "-q", check=True)

    after = _plan(skyflow, "hist.yaml")
    assert after["infra"] == "local" and after["hours_source"] == "history"
    assert 0 < after["hours"] < 0.05  # an echo, measured (seconds), not the 1-hour guess
    # other params that the stage's command uses are other work; one it does not use is the same work
    assert _plan(skyflow, "hist.yaml", "--set", "scale=full")["hours_source"] == "fallback"
    assert _plan(skyflow, "hist.yaml", "--set", "seed=3")["hours_source"] == "history"
    # another pipeline with a stage of the same name and command is not this one
    assert _plan(skyflow, "other.yaml")["hours_source"] == "fallback"
    # the local run does not price the cloud: the A100 estimate does
    cloud = _plan(skyflow, "hist.yaml", "--all-clouds")
    assert (cloud["accelerators"], cloud["hours"]) == ({"A100": 8}, 10)
    assert "hours_source" not in cloud

    with sqlite3.connect(skyflow.home / "state.db") as db:
        keys = db.execute("SELECT work_key FROM stages WHERE stage='train' AND state='succeeded'").fetchall()
    assert len(keys) == 1 and keys[0][0] and len(keys[0][0]) == 16


def test_the_plan_table_says_where_hours_come_from(skyflow: Skyflow) -> None:
    skyflow.write("hist.yaml", PIPELINE.format(name="hist"))
    wide = {"COLUMNS": "200"}  # one line per row: no cell wraps
    shown = skyflow("plan", "hist.yaml", "--no-cache", check=True, env=wide).stdout
    assert "hours from" in shown and "guess (1 h)" in shown
    assert "stage 'train' runs on this machine, for which its estimate has no hours" in shown
    skyflow("run", "hist.yaml", "-q", check=True)
    shown = skyflow("plan", "hist.yaml", "--no-cache", check=True, env=wide).stdout
    assert "past runs" in shown and "guess" not in shown
