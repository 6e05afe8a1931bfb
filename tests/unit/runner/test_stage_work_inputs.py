"""One stage's work on the FakeBackend when its inputs are not as run state says: a producer without the
output, one sent back to run again, an input damaged in the store (healed by running the producer again,
up to a limit), a pipeline input damaged or changed since it was imported, a cached copy in another store
that is gone or damaged, a retry a cancel cuts short, and a service on a backend that cannot serve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyflow.artifacts import DamagedArtifact, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.planner import Placement, Plan
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.events import RETRYING, RunEvent
from skyflow.runner.stage_work import HEAL_LIMIT, StageWork
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState

PIPELINE = """
name: heal
inputs: {{raw: {{uri: raw.txt}}}}
stores:
  gcp/us-central1: {{uri: {far}, create: true}}
  local: {{uri: {near}, create: true}}
stages:
  prep: {{run: prep, inputs: {{raw: raw}}, outputs: [rows]}}
  train: {{run: train, retries: 2, inputs: {{rows: prep.rows}}, outputs: [model]}}
  serve: {{run: serve, service: {{readiness_probe: /health}}}}
"""


def placement(infra: str) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0)


def writes_outputs(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
    return FakeResult()


class Run:
    """A run's context with prep on ``prep_infra`` (its store) and the other stages here."""

    def __init__(self, tmp_path: Path, backend: FakeBackend, *, prep_infra: str = "local",
                 events: list[RunEvent] | None = None, service_backend: object | None = None) -> None:
        self.tmp_path = tmp_path
        (tmp_path / "raw.txt").write_text("raw data")
        (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(far=tmp_path / "far", near=tmp_path / "near"))
        self.pipeline = load_pipeline(tmp_path / "pipeline.yaml")
        self.plan = Plan(pipeline="heal", objective="cost",
                         stages={"prep": placement(prep_infra), "train": placement("local"),
                                 "serve": placement("ssh/lab")},
                         egress=(), total_usd=0.0, total_hours=1.0)
        self.events = events if events is not None else []
        self.state = RunStore(tmp_path / "home" / "state.db")
        backends = {"local": backend, "skypilot": backend, "ssh": service_backend or backend}
        self.backends = BackendPool(BackendContext(), backends)  # type: ignore[arg-type]

    def context(self, run_id: str = "r1") -> RunContext:
        return RunContext(pipeline=self.pipeline, plan=self.plan, state=self.state, backends=self.backends,
                          options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)),
                          emit=self.events.append, home=self.tmp_path / "home", secrets={}, run_id=run_id)

    def start(self, run_id: str = "r1") -> None:
        self.state.create_run(run_id, "heal", "pipeline.yaml", "d", {}, {}, None, ["prep", "train", "serve"], None)

    def produce(self, run_id: str = "r1") -> None:
        """prep done, its output committed in its store."""
        outcome = StageWork(self.context(run_id), "prep").run()
        assert outcome.state == StageState.SUCCEEDED, outcome.message
        self.state.finish_stage(run_id, "prep", outcome.state, outcome.outputs)


def damage_blobs(store_dir: Path) -> None:
    store = open_store(str(store_dir))
    for key in store.list_keys("blobs"):
        store.write_bytes(key, b"X" * store.size_of(key))  # type: ignore[operator]


def test_a_producer_done_without_the_output_fails_the_consumer(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    run.state.finish_stage("r1", "prep", "succeeded", {})
    outcome = StageWork(run.context(), "train").run()
    assert (outcome.state, outcome.message) == (StageState.FAILED, "stage 'prep' finished without output 'rows'")


def test_a_consumer_waits_for_a_producer_sent_back_to_run_again(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    outcome = StageWork(run.context(), "train").run()
    assert (outcome.state, outcome.message) == (StageState.PENDING, "'prep' is running again; this stage waits for it")


def test_a_damaged_input_sends_its_producer_back_until_the_heal_limit(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend)
    run.start()
    run.produce()
    damage_blobs(tmp_path / "near")
    outcome = StageWork(run.context(), "train").run()
    assert outcome.state == StageState.PENDING and "'prep' runs again first" in outcome.message
    prep = run.state.get_stage("r1", "prep")
    assert (prep.state, prep.heals, prep.outputs) == ("pending", 1, {})
    assert [(e.kind, e.stage) for e in run.events if e.kind == RETRYING] == [(RETRYING, "prep")]

    run.state.set_stage("r1", "prep", heals=HEAL_LIMIT)
    run.produce()
    damage_blobs(tmp_path / "near")
    outcome = StageWork(run.context(), "train").run()
    assert outcome.state == StageState.FAILED
    assert outcome.message.startswith(f"input 'rows' (prep.rows) is damaged again after 'prep' ran again {HEAL_LIMIT} "
                                      "times in this run; is the store failing?")
    assert run.state.get_stage("r1", "prep").state == "succeeded"


def test_an_input_whose_source_copy_is_gone_sends_its_producer_back(tmp_path: Path) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs), prep_infra="gcp/us-central1")
    run.start()
    run.produce()
    far = open_store(str(tmp_path / "far"))
    far.delete(list(far.list_keys("blobs")))
    outcome = StageWork(run.context(), "train").run()
    assert outcome.state == StageState.PENDING
    assert outcome.message.startswith("input 'rows' (prep.rows, sha256:")
    assert outcome.message.endswith("was damaged in the store; 'prep' runs again first")
    assert run.state.get_stage("r1", "prep").state == "pending"


def test_a_pipeline_input_changed_since_its_damaged_import_asks_to_run_again(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()
    real_fetch = artifact_io.fetch_input
    calls: list[str] = []

    def damaged_once_and_edited(ref: object, dest: Path) -> object:
        calls.append(str(dest))
        if len(calls) == 1:
            (tmp_path / "raw.txt").write_text("raw data, edited since")
            raise DamagedArtifact("1 of 1 files are missing or corrupted: raw.txt")
        return real_fetch(ref, dest)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact_io, "fetch_input", damaged_once_and_edited)
    outcome = StageWork(run.context(), "prep").run()
    assert outcome.state == StageState.FAILED
    assert "its copy in the store was damaged (1 of 1 files are missing or corrupted: raw.txt), and the data changed " \
           "since this run imported it (sha256:" in outcome.message
    assert outcome.message.endswith("; run again to use the new data")


def test_a_pipeline_input_damaged_again_right_after_its_import_asks_about_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, FakeBackend(writes_outputs))
    run.start()

    def always_damaged(ref: object, dest: Path) -> object:
        raise DamagedArtifact("1 of 1 files are missing or corrupted: raw.txt")

    monkeypatch.setattr(artifact_io, "fetch_input", always_damaged)
    outcome = StageWork(run.context(), "prep").run()
    assert outcome.state == StageState.FAILED
    assert "was damaged, and again right after it was imported again (1 of 1 files are missing or corrupted: " \
           "raw.txt); is the store failing?" in outcome.message


@pytest.mark.parametrize("damage", ["gone", "corrupted"])
def test_a_cached_copy_in_another_store_that_is_not_whole_is_computed_again(tmp_path: Path, damage: str) -> None:
    backend = FakeBackend(writes_outputs)
    first = Run(tmp_path, backend, prep_infra="gcp/us-central1")
    first.start("r0")
    first.produce("r0")
    far = open_store(str(tmp_path / "far"))
    if damage == "gone":
        far.delete(list(far.list_keys("blobs")))
    else:
        damage_blobs(tmp_path / "far")
    second = Run(tmp_path, backend)
    second.start("r1")
    launches = len(backend.launches)
    outcome = StageWork(second.context("r1"), "prep").run()
    assert (outcome.state, outcome.message) == (StageState.SUCCEEDED, "")
    assert len(backend.launches) == launches + 1  # prep ran again rather than reuse a broken copy


def test_a_cancel_during_the_retry_wait_ends_the_stage_without_another_attempt(tmp_path: Path) -> None:
    backend = FakeBackend(lambda launch: FakeResult(exit_code=1) if launch.stage == "train" else writes_outputs(launch))
    events: list[RunEvent] = []
    run = Run(tmp_path, backend, events=events)
    run.start()
    run.produce()
    ctx = run.context()

    def cancel_on_retry(event: RunEvent) -> None:
        events.append(event)
        if event.kind == RETRYING:
            ctx.cancel_requested.set()

    ctx.emit = cancel_on_retry
    outcome = StageWork(ctx, "train").run()
    assert outcome.state == StageState.FAILED and outcome.message.startswith("attempt 1: exit code 1")
    assert [launch.stage for launch in backend.launches] == ["prep", "train"]
    assert [e.kind for e in events].count(RETRYING) == 1


class BatchOnly:
    """A backend that runs batch stages only."""

    name = "batch-only"


def test_a_service_on_a_backend_that_cannot_serve_fails_with_the_reason(tmp_path: Path) -> None:
    backend = FakeBackend(writes_outputs)
    run = Run(tmp_path, backend, service_backend=BatchOnly())
    run.start()
    outcome = StageWork(run.context(), "serve").run()
    assert (outcome.state, outcome.message) == (StageState.FAILED,
                                                "the batch-only backend cannot run service stages yet")


