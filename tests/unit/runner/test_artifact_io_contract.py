"""How the runner finds and uses artifact stores: which store a placement writes to, where a pipeline input
lives, importing local and remote inputs, committing a stage's outputs, the cache index, checking outputs are
still there, and predicting which stages an earlier run left cached (and where)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from skyflow.artifacts import ArtifactRecord, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.backends.registry import BackendContext, BackendPool
from skyflow.errors import ArtifactError
from skyflow.planner import Placement, Plan
from skyflow.runner import artifact_io
from skyflow.runner.context import RunContext, RunOptions
from skyflow.runner.loop import RunLoop
from skyflow.runner.state import RunStore
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.loader import load_pipeline

STORES = """
name: stores
stores:
  aws/us-east-1: {uri: s3://east, create: true}
  aws: s3://aws-any
  gcp: gs://anywhere-in-gcp
  ssh: /srv/ssh-store
  local: {uri: ~/skyflow-store, create: true}
inputs:
  raw: {uri: data/raw}
  home_data: {uri: ~/datasets/corpus}
  absolute: {uri: file:///mnt/shared/corpus}
  remote: {uri: s3://bucket/corpus}
stages:
  a: {run: a}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    return user


def _pipeline(tmp_path: Path, text: str) -> ResolvedPipeline:
    (tmp_path / "pipeline.yaml").write_text(text)
    return load_pipeline(tmp_path / "pipeline.yaml")


@pytest.mark.parametrize(("infra", "located_at", "expected"), [
    ("aws/us-east-1", None, ("s3://east", True, "us-east-1")),
    ("aws/eu-west-1", None, ("s3://aws-any", False, "eu-west-1")),
    ("aws/*", None, ("s3://aws-any", False, None)),
    ("aws", None, ("s3://aws-any", False, None)),
    ("gcp/us-central1", None, ("gs://anywhere-in-gcp", False, "us-central1")),
    ("kubernetes/eks-prod", "aws/us-east-1", ("s3://east", True, "us-east-1")),
    ("azure/eastus", None, ("{home}/skyflow-store", True, None)),
    ("local", None, ("{home}/skyflow-store", True, None)),
    ("ssh/lab", None, ("{home}/skyflow-store", True, None)),
])
def test_a_placement_writes_to_the_store_named_for_its_region_then_its_cloud_else_the_local_one(
        tmp_path: Path, home: Path, infra: str, located_at: str | None,
        expected: tuple[str, bool, str | None]) -> None:
    pipeline = _pipeline(tmp_path, STORES)
    uri, create, region = expected
    assert artifact_io.store_for_infra(pipeline, infra, tmp_path / "skyflow-home", located_at) == \
        (uri.format(home=home), create, region)


def test_without_a_local_store_the_home_folder_holds_artifacts_and_is_created(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "name: bare\nstages:\n  a: {run: a}\n")
    assert artifact_io.store_for_infra(pipeline, "local", tmp_path / "h") == (str(tmp_path / "h" / "artifacts"),
                                                                             False, None)
    assert artifact_io.local_store_uri(pipeline, tmp_path / "h") == str(tmp_path / "h" / "artifacts")


@pytest.mark.parametrize(("local", "expected"), [
    ("~/skyflow-store", "{home}/skyflow-store"),
    ("s3://team-bucket/skyflow", "s3://team-bucket/skyflow"),
    ("memory://scratch", "memory://scratch"),
    ("store", "{pipeline_dir}/store"),
    ("../shared/store", "{pipeline_dir}/../shared/store"),
])
def test_the_local_store_is_a_path_with_home_expanded_or_a_uri_kept_as_written(
        tmp_path: Path, home: Path, local: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = _pipeline(tmp_path, f"name: l\nstores:\n  local: {local}\nstages:\n  a: {{run: a}}\n")
    monkeypatch.chdir(home)  # a relative path is the pipeline folder's, wherever the command runs
    assert artifact_io.local_store_uri(pipeline, tmp_path / "h") == \
        expected.format(home=home, pipeline_dir=pipeline.base_dir)


def test_a_pipeline_input_or_a_uri_is_located_as_a_local_path_or_kept_remote(tmp_path: Path, home: Path) -> None:
    pipeline = _pipeline(tmp_path, STORES)
    located = {ref: artifact_io.external_location(pipeline, ref)
               for ref in ("raw", "home_data", "absolute", "remote", "gs://other/x", "file:///tmp/y", "rel/z")}
    assert located == {"raw": str(tmp_path / "data" / "raw"), "home_data": str(home / "datasets" / "corpus"),
                       "absolute": "/mnt/shared/corpus", "remote": "s3://bucket/corpus",
                       "gs://other/x": "gs://other/x", "file:///tmp/y": "/tmp/y", "rel/z": str(tmp_path / "rel" / "z")}


def test_a_stage_workdir_is_resolved_against_the_pipeline_folder(tmp_path: Path, home: Path) -> None:
    pipeline = _pipeline(tmp_path, "name: w\nstages:\n  rel: {run: a, workdir: src}\n  tilde: {run: b, workdir: ~/w}\n"
                                   "  none: {run: c}\n")
    assert {n: artifact_io.stage_code_dir(pipeline, n) for n in ("rel", "tilde", "none")} == \
        {"rel": tmp_path / "src", "tilde": home / "w", "none": None}


# -- importing inputs, committing outputs ----------------------------------------------------------

def test_a_local_input_is_committed_under_its_name(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.csv").write_text("a,b\n")
    ref = artifact_io.import_external(store, "raw", str(tmp_path / "raw"))
    assert (ref.name, ref.size_bytes, ref.file_count, ref.store.uri) == ("raw", 4, 1, store.uri)


def test_a_remote_file_is_imported_and_reaches_the_stage_as_one_file(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    bucket = f"memory://inputs-{uuid.uuid4().hex}"
    with fsspec.open(f"{bucket}/corpus.txt", "wb") as f:
        f.write(b"some text")
    ref = artifact_io.import_external(store, "corpus", f"{bucket}/corpus.txt")
    assert (ref.name, ref.size_bytes, ref.file_count) == ("corpus", 9, 1)
    before = time.monotonic()
    path, size, seconds = artifact_io.fetch_input(ref, tmp_path / "in")
    elapsed = time.monotonic() - before
    assert (path, size, path.read_bytes()) == ((tmp_path / "in" / "data").resolve(), 9, b"some text")
    assert 0 <= seconds <= elapsed


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_remote_folder_is_imported_whole_with_its_subfolders(tmp_path: Path, slash: str) -> None:
    store = open_store(str(tmp_path / "store"))
    bucket = f"memory://inputs-{uuid.uuid4().hex}"
    files = {"part-0.csv": b"a,b\n", "nested/part-1.csv": b"1,2\n3,4\n", "nested/deeper/x.bin": b"xyz"}
    for rel, data in files.items():
        with fsspec.open(f"{bucket}/table/{rel}", "wb") as f:
            f.write(data)
    ref = artifact_io.import_external(store, "table", f"{bucket}/table{slash}")
    assert (ref.name, ref.size_bytes, ref.file_count) == ("table", 15, 3)
    path, size, _ = artifact_io.fetch_input(ref, tmp_path / "in")
    got = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert (got, size) == (files, 15)


def test_a_missing_remote_input_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    bucket = f"memory://inputs-{uuid.uuid4().hex}"
    with pytest.raises(ArtifactError) as info:
        artifact_io.import_external(store, "corpus", f"{bucket}/gone.txt")
    assert (str(info.value), info.value.artifact, info.value.uri) == (
        f"artifact 'corpus' at {bucket}/gone.txt: input data does not exist", "corpus", f"{bucket}/gone.txt")


def test_an_empty_output_is_refused_naming_the_output_and_its_folder(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "model").mkdir()
    with pytest.raises(ArtifactError) as info:
        artifact_io.commit_outputs(store, {"model": tmp_path / "model"})
    assert str(info.value) == f"artifact 'model' at {tmp_path / 'model'}: the stage wrote nothing to this output"


def test_an_output_folder_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_text("not the stage's")
    (tmp_path / "model").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match="the output directory was replaced by a symlink"):
        artifact_io.commit_outputs(store, {"model": tmp_path / "model"})
    assert store.list_keys("manifests") == {}


def test_committed_outputs_are_described_as_plain_data(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    for name, text in (("model", "weights"), ("metrics", "{}")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(text)
    records = artifact_io.commit_outputs(store, {"model": tmp_path / "model", "metrics": tmp_path / "metrics"})
    assert {n: (r.name, r.size_bytes, r.store_uri, r.file_count) for n, r in records.items()} == \
        {"model": ("model", 7, store.uri, 1), "metrics": ("metrics", 2, store.uri, 1)}
    assert artifact_io.describe(records) == {
        n: {"uri": r.uri, "digest": r.digest, "size_bytes": r.size_bytes} for n, r in records.items()}
    assert artifact_io.describe(records)["model"]["uri"].startswith(store.uri)


def test_a_recorded_cache_entry_is_found_with_its_outputs_and_forgotten(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"w" * 10)
    records = artifact_io.commit_outputs(store, {"model": tmp_path / "model"})
    assert artifact_io.cache_lookup(store, "k1") is None
    artifact_io.cache_record(store, "k1", records)
    found = artifact_io.cache_lookup(store, "k1")
    assert found is not None and found[0] == records
    artifact_io.cache_forget(store, "k1")
    assert artifact_io.cache_lookup(store, "k1") is None


def _blob_paths(store_root: Path) -> list[Path]:
    return sorted(p for p in (store_root / "blobs").rglob("*") if p.is_file())


def test_outputs_are_still_there_until_a_blob_goes_missing_checking_sizes_not_bytes(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"w" * 10)
    records = artifact_io.commit_outputs(store, {"model": tmp_path / "model"})
    assert artifact_io.outputs_still_there(records, store) is True
    [blob] = _blob_paths(tmp_path / "store")
    blob.write_bytes(b"x" * 10)  # same size, other bytes: not re-read here (a fetch verifies them)
    assert artifact_io.outputs_still_there(records, store) is True
    assert _blob_paths(tmp_path / "store") == [blob]
    blob.unlink()
    assert artifact_io.outputs_still_there(records, store) is False
    not_stored = {"raw": ArtifactRecord(name="raw", uri="/data/raw", digest=records["model"].digest)}
    assert artifact_io.outputs_still_there(not_stored) is False


# -- predicting cached stages ---------------------------------------------------------------------

CACHED = """
name: cached
secrets: [TOKEN]
inputs: {{raw: {{uri: raw}}}}
stores:
  gcp/us-central1: {{uri: "{far}/"}}
  aws: {{uri: "{aws}/"}}
  local: {{uri: {near}, create: true}}
stages:
{extra}  scratch: {{run: s, outputs: [tmp], cache: false}}
  prep: {{run: p, inputs: {{data: raw}}, outputs: [rows, marker]}}
  train: {{run: t, inputs: {{rows: prep.rows}}, outputs: [model], workdir: code}}
  report: {{run: r, inputs: {{model: train.model}}, outputs: [summary]}}
  side: {{run: x, outputs: [notes]}}
"""
SIZES = {"tmp": 11, "rows": 3000, "model": 500, "summary": 70, "notes": 9}


def _placement(infra: str) -> Placement:
    cloud, _, region = infra.partition("/")
    return Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="m", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0)


def _writes(launch: StageLaunch) -> FakeResult:
    for name, path in launch.outputs.items():
        if name == "marker":
            (path / "done").write_bytes(b"")  # an output holding one empty file weighs 0 bytes
        else:
            (path / f"{name}.bin").write_bytes(b"x" * SIZES[name])
    return FakeResult()


def _write_pipeline(tmp_path: Path, extra: str = "", near: str | Path | None = None) -> None:
    (tmp_path / "pipeline.yaml").write_text(CACHED.format(far=f"memory://far-{tmp_path.name}-{uuid.uuid4().hex}",
                                                          aws=tmp_path / "aws", near=near or tmp_path / "near",
                                                          extra=extra))


@pytest.fixture
def ran(tmp_path: Path) -> RunContext:
    """One finished run: prep in gcp/us-central1, train in aws/us-east-1, the rest on this machine."""
    return _run_once(tmp_path)


def _run_once(tmp_path: Path, near: str | None = None) -> RunContext:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "part-0.csv").write_text("a,b\n1,2\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('train')\n")
    _write_pipeline(tmp_path, near=near)
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    placements = {"scratch": "local", "prep": "gcp/us-central1", "train": "aws/us-east-1", "report": "local",
                  "side": "local"}
    plan = Plan(pipeline="cached", objective="cost", stages={n: _placement(i) for n, i in placements.items()},
                egress=(), total_usd=0.0, total_hours=1.0)
    backend = FakeBackend(_writes)
    home = tmp_path / "home"
    ctx = RunContext(pipeline=pipeline, plan=plan, state=RunStore(home / "state.db"),
                     backends=BackendPool(BackendContext(), {"local": backend, "skypilot": backend}),
                     options=RunOptions(retry_base_delay_s=0.0, env=dict(os.environ)), emit=lambda event: None,
                     home=home, secrets={"TOKEN": "t0ken"}, run_id="r1")
    assert RunLoop(ctx).start("r1", "pipeline.yaml", {}, {}, lineage=False) == "succeeded"
    return ctx


def _gb(*outputs: str) -> float:
    return sum(SIZES.get(o, 0) for o in outputs) / 1e9


def test_every_cached_stage_is_predicted_where_its_outputs_are_with_their_size(ran: RunContext) -> None:
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"prep": [("gcp/us-central1", _gb("rows", "marker"))], "train": [("aws/*", _gb("model"))],
                     "report": [("local", _gb("summary"))], "side": [("local", _gb("notes"))]}


def test_a_relative_local_store_is_the_pipeline_folders_and_its_outputs_are_predicted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tmp_path / "project").mkdir()
    ran = _run_once(tmp_path / "project", near="near")
    assert (tmp_path / "project" / "near" / "manifests").is_dir() and not (elsewhere / "near").exists()
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found["report"] == [("local", _gb("summary"))] and found["side"] == [("local", _gb("notes"))]


def test_nothing_is_predicted_when_a_secret_the_run_had_is_unset(ran: RunContext) -> None:
    assert artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": ""}) == {}


def test_a_stage_whose_code_changed_is_predicted_to_run_again_with_what_it_feeds(ran: RunContext,
                                                                                  tmp_path: Path) -> None:
    (tmp_path / "code" / "train.py").write_text("print('train v2')\n")
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"prep": [("gcp/us-central1", _gb("rows", "marker"))], "side": [("local", _gb("notes"))]}


def test_outputs_gone_from_their_store_are_not_predicted_nor_what_consumes_them(ran: RunContext,
                                                                                  tmp_path: Path) -> None:
    for blob in _blob_paths(tmp_path / "aws"):
        blob.unlink()
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"prep": [("gcp/us-central1", _gb("rows", "marker"))], "side": [("local", _gb("notes"))]}


def test_a_stage_whose_input_is_gone_is_not_predicted_nor_its_consumers(ran: RunContext, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "raw")
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"side": [("local", _gb("notes"))]}


def test_outputs_in_a_store_the_pipeline_no_longer_names_are_not_predicted(ran: RunContext, tmp_path: Path) -> None:
    text = (tmp_path / "pipeline.yaml").read_text()
    (tmp_path / "pipeline.yaml").write_text(text.replace(f'  aws: {{uri: "{tmp_path / "aws"}/"}}\n', ""))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    assert set(pipeline.spec.stores) == {"gcp/us-central1", "local"}
    found = artifact_io.predict_cached_copies(pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"prep": [("gcp/us-central1", _gb("rows", "marker"))], "side": [("local", _gb("notes"))]}


def test_a_stage_added_since_the_last_run_is_not_predicted(ran: RunContext, tmp_path: Path) -> None:
    text = (tmp_path / "pipeline.yaml").read_text()
    (tmp_path / "pipeline.yaml").write_text(text.replace("stages:\n", "stages:\n  fresh: {run: f, outputs: [f]}\n"))
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    assert pipeline.order[0] == "fresh"
    found = artifact_io.predict_cached_copies(pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert set(found) == {"prep", "train", "report", "side"}


def test_a_stage_whose_outputs_ended_up_in_two_stores_is_not_predicted(ran: RunContext, tmp_path: Path) -> None:
    prep = ran.state.get_stage("r1", "prep")
    (tmp_path / "marker").mkdir()
    (tmp_path / "marker" / "done").write_bytes(b"")
    moved = artifact_io.commit_outputs(ran.local_store(), {"marker": tmp_path / "marker"})
    ran.state.finish_stage("r1", "prep", "succeeded", {"rows": prep.outputs["rows"], "marker": moved["marker"]})
    found = artifact_io.predict_cached_copies(ran.pipeline, ran.state, ran.home, {"TOKEN": "t0ken"})
    assert found == {"side": [("local", _gb("notes"))]}
