"""What a run's stages share through its context: the store each placement uses (opened once), pipeline inputs
imported once per store and recorded as a priced transfer, what moving data to a stage cost, and the backend
of a stage's placement."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from skyflow.backends.base import Backend
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.catalog import EgressModel, EgressRule
from skyflow.errors import BackendError
from skyflow.planner import EgressCharge, Placement, Plan
from skyflow.runner.context import RunContext, RunOptions, store_of_placement
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline

PIPELINE = """
name: shared
inputs: {{raw: {{uri: raw}}, labels: {{uri: labels.csv}}}}
stores:
  aws/us-east-1: {{uri: s3://east, create: true}}
  gcp/us-central1: {{uri: {far}}}
  local: {{uri: {near}, create: true}}
stages:
  left: {{run: left, inputs: {{data: raw}}, outputs: [o]}}
  right: {{run: right, inputs: {{data: raw}}, outputs: [o]}}
  edge: {{run: edge, inputs: {{data: raw}}, outputs: [o]}}
"""


def _placement(infra: str, located_at: str | None = None, store_uri: str | None = None) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0, located_at=located_at,
                     store_uri=store_uri)


def _context(tmp_path: Path, egress: tuple[EgressCharge, ...] = (), prices: EgressModel | None = None,
             backends: BackendPool | None = None) -> RunContext:
    (tmp_path / "raw").mkdir(exist_ok=True)
    (tmp_path / "raw" / "part-0.csv").write_text("a,b\n1,2\n")
    (tmp_path / "labels.csv").write_text("cat\ndog\n")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(far=tmp_path / "far", near=tmp_path / "near"))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    plan = Plan(pipeline="shared", objective="cost", egress=egress, total_usd=0.0, total_hours=1.0,
                stages={"left": _placement("gcp/us-central1"), "right": _placement("local"),
                        "edge": _placement("kubernetes/eks", located_at="aws/us-east-1")})
    home = tmp_path / "home"
    backends = backends or BackendPool(BackendContext(), {"local": FakeBackend(lambda _: FakeResult())})
    return RunContext(pipeline=pipeline, plan=plan, state=RunStore(home / "state.db"), backends=backends,
                      options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)), emit=lambda event: None,
                      home=home, secrets={}, egress=prices, run_id="r1")


def test_a_placement_uses_its_attached_store_else_the_one_where_its_cluster_lives(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    home = tmp_path / "home"
    assert store_of_placement(ctx.pipeline, _placement("kubernetes/eks", located_at="aws/us-east-1"), home) == \
        ("s3://east", True, "us-east-1")
    assert store_of_placement(ctx.pipeline, _placement("aws/us-east-1", store_uri="s3://attached"), home) == \
        ("s3://attached", True, "us-east-1")
    assert store_of_placement(ctx.pipeline, _placement("local"), home) == (str(tmp_path / "near"), True, None)


def test_each_store_is_opened_once_per_run_and_shared_by_the_stages_placed_there(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    local = ctx.local_store()
    assert local.uri == str(tmp_path / "near") and (tmp_path / "near").is_dir()
    assert ctx.store_for("right") is local
    far = ctx.store_for("left")
    assert far.uri == str(tmp_path / "far") and far is not local and ctx.store_for("left") is far


def _transfers(ctx: RunContext) -> list[tuple[str, str, str, int, float, float]]:
    with sqlite3.connect(ctx.state.path) as db:
        return db.execute("SELECT run_id, stage, artifact, bytes, seconds, egress_usd FROM transfers "
                          "ORDER BY rowid").fetchall()


def test_an_input_is_imported_once_per_store_and_recorded_as_a_priced_transfer(tmp_path: Path) -> None:
    charge = EgressCharge("raw", "left", "local", "gcp/us-central1", size_gb=2.0, usd=0.5)
    ctx = _context(tmp_path, egress=(charge,))
    store = ctx.store_for("left")
    before = time.monotonic()
    raw = ctx.import_input(store, "raw", str(tmp_path / "raw"), "left")
    elapsed = time.monotonic() - before
    assert ctx.import_input(store, "raw", str(tmp_path / "raw"), "right") is raw
    labels = ctx.import_input(store, "labels", str(tmp_path / "labels.csv"), "left")
    assert (raw.name, raw.size_bytes, raw.store.uri) == ("raw", 8, store.uri)
    assert (labels.name, labels.size_bytes) == ("labels", 8)
    assert labels.digest != raw.digest
    [(run_id, stage, artifact, moved, seconds, usd), second] = _transfers(ctx)
    assert (run_id, stage, artifact, moved, usd) == ("r1", "left", f"import raw={raw.digest}", 8, 0.5 * 8 / 1e9 / 2.0)
    assert 0 <= seconds <= elapsed
    assert (second[1], second[2], second[3], second[5]) == ("left", f"import labels={labels.digest}", 8, 0.0)


def test_moving_data_costs_the_plan_rate_for_the_bytes_really_moved(tmp_path: Path) -> None:
    charges = (EgressCharge("prep.rows", "right", "gcp/us-central1", "local", size_gb=4.0, usd=0.48),
               EgressCharge("raw", "left", "local", "gcp/us-central1", size_gb=0.5, usd=0.06))
    ctx = _context(tmp_path, egress=charges)
    assert ctx.moved_usd("prep.rows", "right", 1_000_000_000) == 0.48 * 1e9 / 1e9 / 4.0
    assert ctx.moved_usd("raw", "left", 250_000_000) == 0.06 * 250_000_000 / 1e9 / 0.5
    assert ctx.moved_usd("raw", "left", 1) == 0.06 * 1 / 1e9 / 0.5
    # the plan moved raw to gcp only, and nothing of prep.rows to gcp: these moves are free
    assert ctx.moved_usd("raw", "right", 1_000_000_000) == 0.0
    assert ctx.moved_usd("prep.rows", "left", 1_000_000_000) == 0.0
    assert ctx.moved_usd("raw", "left", 0) == 0.0


def test_a_move_the_plan_priced_at_zero_size_costs_nothing(tmp_path: Path) -> None:
    ctx = _context(tmp_path, egress=(EgressCharge("raw", "left", "local", "gcp/us-central1", size_gb=0.0, usd=0.0),))
    assert ctx.moved_usd("raw", "left", 1_000_000) == 0.0


def test_with_prices_at_hand_a_move_is_priced_between_where_the_machines_really_are(tmp_path: Path) -> None:
    prices = EgressModel(rules=(EgressRule("aws/us-east-1", "gcp/us-central1", 0.09),
                                EgressRule("gcp/us-central1", "aws/us-east-1", 0.12)))
    charges = (EgressCharge("edge.o", "left", "kubernetes/eks", "gcp/us-central1", size_gb=1.0, usd=0.0),
               EgressCharge("left.o", "edge", "gcp/us-central1", "kubernetes/eks", size_gb=1.0, usd=0.0))
    ctx = _context(tmp_path, egress=charges, prices=prices)
    assert ctx.moved_usd("edge.o", "left", 3_000_000_000) == pytest.approx(3.0 * 0.09)
    assert ctx.moved_usd("edge.o", "left", 3_000_000_000) == prices.estimate_egress_usd(
        3_000_000_000 / 1e9, "aws/us-east-1", "gcp/us-central1")
    assert ctx.moved_usd("left.o", "edge", 2_000_000_000) == pytest.approx(2.0 * 0.12)


class NoPool(BackendPool):
    def for_infra(self, infra: str) -> Backend:
        raise BackendError("no SSH pool 'lab' in the config", backend="ssh")


def test_a_placement_without_a_backend_fails_naming_the_stage_and_the_backend(tmp_path: Path) -> None:
    ctx = _context(tmp_path, backends=NoPool(BackendContext()))
    with pytest.raises(BackendError) as info:
        ctx.backend_for("left")
    assert (str(info.value), info.value.stage, info.value.backend) == (
        "stage 'left' is placed on 'gcp/us-central1': no SSH pool 'lab' in the config", "left", "ssh")
