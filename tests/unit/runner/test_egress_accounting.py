"""A run's actual cost counts the data it really moved: each transfer between stores is priced by
the egress rule the plan applied to that move, with the bytes moved (not the planned size), and is
recorded per transfer, per stage and in the run total."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.catalog import EgressModel, EgressRule
from skyflow.planner import EgressCharge, Placement, Plan
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import EventBus
from skyflow.runner.loop import RunLoop
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline

PIPELINE = """
name: moves
stores:
  gcp/us-central1: {{uri: {far}, create: true}}
  local: {{uri: {near}, create: true}}
stages:
  prep: {{run: prep, outputs: [rows]}}
  train: {{run: train, inputs: {{rows: prep.rows}}, outputs: [model]}}
"""
RATE = 0.12  # USD per GB, gcp/us-central1 -> local
SIZE = 3_000_000  # bytes prep writes


def _placement(infra: str, hourly: float) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=hourly, hours=1.0)


def _writes(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        (path / f"{name}.bin").write_bytes(b"x" * SIZE)
    return FakeResult()


def _run(tmp_path: Path, planned_gb: float, egress: EgressModel | None) -> RunStore:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(far=tmp_path / "far", near=tmp_path / "near"))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    # the plan priced 40 GB at the rule's rate; 3 MB really moved
    plan = Plan(pipeline="moves", objective="cost",
                stages={"prep": _placement("gcp/us-central1", 2.0), "train": _placement("local", 0.0)},
                egress=(EgressCharge("prep.rows", "train", "gcp/us-central1", "local", planned_gb,
                                     planned_gb * RATE),), total_usd=2.0 + planned_gb * RATE, total_hours=2.0)
    backend = FakeBackend(_writes)
    home = tmp_path / "home"
    state = RunStore(home / "state.db")
    ctx = RunContext(pipeline=pipeline, plan=plan, state=state,
                     backends=BackendPool(BackendContext(), {"local": backend, "skypilot": backend}),
                     options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)), emit=EventBus([]), home=home,
                     secrets={}, egress=egress)
    assert RunLoop(ctx).start("r1", "pipeline.yaml", {}, {}, lineage=False) == "succeeded"
    return state


@pytest.mark.parametrize("egress", [EgressModel(rules=(EgressRule("gcp", "local", RATE),)), None],
                         ids=["priced-by-the-rule", "priced-at-the-plan's-rate"])
def test_moved_bytes_are_priced_by_the_rule_the_plan_applied(tmp_path: Path, egress: EgressModel | None) -> None:
    state = _run(tmp_path, 40.0, egress)
    with sqlite3.connect(state.path) as db:
        moves = db.execute("SELECT stage, artifact, bytes, egress_usd FROM transfers WHERE run_id='r1' "
                           "AND egress_usd > 0").fetchall()
    assert len(moves) == 1
    stage, artifact, moved, usd = moves[0]
    assert (stage, artifact.split("=")[0]) == ("train", "rows") and moved >= SIZE
    assert usd == pytest.approx(moved / 1e9 * RATE)  # the bytes moved, not the 40 GB planned
    run = state.get_run("r1")
    train = run.stages["train"]
    assert train.egress_gb == pytest.approx(moved / 1e9) and train.egress_usd == pytest.approx(usd)
    compute = sum(s.cost_usd or 0.0 for s in run.stages.values())
    assert run.stages["prep"].cost_usd and run.stages["prep"].cost_usd > 0
    assert run.actual_usd == pytest.approx(compute + usd)
    assert run.actual_usd is not None
    assert run.actual_usd > compute


def test_a_move_the_plan_did_not_price_costs_nothing(tmp_path: Path) -> None:
    # the plan (made with other prices) charged nothing for that move: nothing is invented at run time
    state = _run(tmp_path, 0.0, None)
    run = state.get_run("r1")
    assert run.stages["train"].egress_usd == 0.0
    assert run.actual_usd == pytest.approx(sum(s.cost_usd or 0.0 for s in run.stages.values()))
