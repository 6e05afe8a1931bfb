"""The runner's artifact plumbing at its edges: pipeline inputs that are missing or unreadable, a local
file or a remote object imported, an output the stage left empty, a second run's plan predicting cached
outputs (a shared input hashed once), params as a stage sees them, and a placement with no backend."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from skyflow.artifacts import open_store
from skyflow.backends.base import Backend, StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.errors import ArtifactError, BackendError
from skyflow.planner import Placement, Plan
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.environment import stage_environment
from skyflow.runner.loop import RunLoop
from skyflow.runner.stage_work import StageWork
from skyflow.runner.state import RunStore
from skyflow.spec.loader import load_pipeline
from skyflow.states import StageState

PIPELINE = """
name: shared
params: {fast: true, scale: 0.5, tags: [a, b]}
inputs: {raw: {uri: raw}}
stages:
  left: {run: left, inputs: {data: raw}, outputs: [o]}
  right: {run: right, inputs: {data: raw}, outputs: [o]}
"""


@pytest.fixture
def pipeline_dir(tmp_path: Path) -> Path:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "part-0.csv").write_text("a,b\n1,2\n")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return tmp_path


def test_a_missing_local_input_is_named(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match=rf"artifact 'raw' at {tmp_path}/nothing: input data does not exist"):
        artifact_io.import_external(store, "raw", str(tmp_path / "nothing"))


def test_a_remote_file_is_imported_and_a_missing_or_unreadable_one_is_named(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    bucket = f"memory://inputs-{uuid.uuid4().hex}"
    with fsspec.open(f"{bucket}/corpus.txt", "wb") as f:
        f.write(b"some text")
    ref = artifact_io.import_external(store, "corpus", f"{bucket}/corpus.txt")
    assert ref.file_count == 1 and ref.size_bytes == 9
    with pytest.raises(ArtifactError, match=r"input data does not exist"):
        artifact_io.import_external(store, "corpus", f"{bucket}/gone.txt")
    with pytest.raises(ArtifactError, match=r"artifact 'corpus' at nosuch://x/y: cannot read input data: "):
        artifact_io.import_external(store, "corpus", "nosuch://x/y")


def test_an_output_left_empty_is_a_failure_not_an_empty_artifact(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "model").mkdir()
    with pytest.raises(ArtifactError, match=r"artifact 'model' at .*: the stage wrote nothing to this output"):
        artifact_io.commit_outputs(store, {"model": tmp_path / "model"})
    assert store.list_keys("manifests") == {}


def test_forgetting_a_cache_entry_tolerates_no_key_and_an_unreachable_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    store.write_bytes("cache/k.json", b"{}")
    artifact_io.cache_forget(store, None)
    assert store.read_optional("cache/k.json") == b"{}"

    class Unreachable:
        uri = "s3://gone"

        def url(self, key: str) -> str:
            return f"s3://gone/{key}"

        def delete(self, keys: object) -> None:
            raise ArtifactError("deleting failed: the store cannot be reached", uri="s3://gone")

    artifact_io.cache_forget(Unreachable(), "k")  # type: ignore[arg-type]
    artifact_io.cache_forget(store, "k")
    assert store.read_optional("cache/k.json") is None


def local() -> Placement:
    return Placement(infra="local", cloud="local", region=None, zone=None, instance_type="local", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0)


def writes_outputs(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
    return FakeResult()


def context(pipeline_dir: Path, backends: BackendPool) -> RunContext:
    pipeline = load_pipeline(pipeline_dir / "pipeline.yaml")
    plan = Plan(pipeline="shared", objective="cost", stages={"left": local(), "right": local()}, egress=(),
                total_usd=0.0, total_hours=1.0)
    return RunContext(pipeline=pipeline, plan=plan, state=RunStore(pipeline_dir / "home" / "state.db"),
                      backends=backends, options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)),
                      emit=lambda event: None, home=pipeline_dir / "home", secrets={}, run_id="r1")


def test_a_second_plan_predicts_both_consumers_cached_hashing_their_input_once(
        pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(pipeline_dir, BackendPool(BackendContext(), {"local": FakeBackend(writes_outputs)}))
    assert RunLoop(ctx).start("r1", "pipeline.yaml", {}, ctx.pipeline.spec.params, lineage=False) == "succeeded"
    hashed: list[str] = []
    real = artifact_io._local_digest

    def counting(location: str) -> str | None:
        hashed.append(location)
        return real(location)

    monkeypatch.setattr(artifact_io, "_local_digest", counting)
    found = artifact_io.predict_cached_copies(ctx.pipeline, ctx.state, ctx.home, {})
    assert set(found) == {"left", "right"}
    assert found["left"][0][0] == "local" and found["left"][0][1] > 0
    assert hashed == [str(pipeline_dir / "raw")]


def test_params_reach_the_stage_as_text_a_shell_reads(pipeline_dir: Path) -> None:
    pipeline = load_pipeline(pipeline_dir / "pipeline.yaml")
    env = stage_environment(pipeline, "left", run_id="r1", params=pipeline.spec.params, inputs={}, outputs={},
                            gpus_per_node=0, secrets={}, base_env={}, num_nodes=1)
    assert (env["SKYFLOW_PARAM_FAST"], env["SKYFLOW_PARAM_SCALE"], env["SKYFLOW_PARAM_TAGS"]) == \
        ("true", "0.5", '["a", "b"]')


class NoPools(BackendPool):
    """A pool whose backend for the placement cannot be opened (its config names no such pool)."""

    def for_infra(self, infra: str) -> Backend:
        raise BackendError("no SSH pool 'lab' in the config", backend="ssh")


def test_a_stage_placed_where_no_backend_opens_fails_naming_the_placement(pipeline_dir: Path) -> None:
    ctx = context(pipeline_dir, NoPools(BackendContext()))
    ctx.state.create_run("r1", "shared", "pipeline.yaml", "d", {}, {}, None, ["left", "right"], None)
    outcome = StageWork(ctx, "left").run()
    assert (outcome.state, outcome.message) == (StageState.FAILED,
                                                "stage 'left' is placed on 'local': no SSH pool 'lab' in the config")
