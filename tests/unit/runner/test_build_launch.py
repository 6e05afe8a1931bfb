"""One attempt's StageLaunch, whole: the planned alternative's resources, the workdir, the env, the artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRecord
from skyflow.planner import Placement
from skyflow.runner.environment import stage_environment
from skyflow.runner.launches import build_launch, planned_stage, preview_launch, stage_workdir
from skyflow.spec.loader import load_pipeline

PIPELINE = """\
name: alt
stages:
  prep:
    run: echo prep
    outputs: [rows]
  one:
    run: echo one
    workdir: sub/dir
    resources: {accelerators: A100:2}
    inputs: {rows: prep.rows}
  choice:
    run: echo choice
    resources: {accelerators: {A100: 2, H100: 1}}
  anyof:
    run: echo anyof
    workdir: /opt/code
    resources:
      any_of:
        - {accelerators: L4:1, disk_size: 100}
        - {accelerators: A100:8, disk_size: 500}
  ordered:
    run: echo ordered
    workdir: ~/code
    resources:
      ordered:
        - {accelerators: H100:8}
        - {accelerators: A10:1}
"""


def placement(alternative: int = 0, nodes: int = 1) -> Placement:
    return Placement(infra="aws/us-east-1", cloud="aws", region="us-east-1", zone=None, instance_type="x",
                     accelerators={}, use_spot=False, num_nodes=nodes, hourly_usd=1.0, hours=1.0,
                     alternative=alternative)


@pytest.fixture
def pipeline(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return load_pipeline(tmp_path / "pipeline.yaml")


@pytest.mark.parametrize(("stage", "alternative", "want"), [
    ("anyof", 0, ("L4", 100)), ("anyof", 1, ("A100", 500)), ("anyof", 7, ("L4", 100)),  # out of range: the first
    ("ordered", 0, ("H100", None)), ("ordered", 1, ("A10", None)), ("ordered", 2, ("H100", None)),
    ("choice", 0, ("A100", None)), ("choice", 1, ("H100", None)),  # an accelerator set is alternatives too
])
def test_the_planned_alternative_becomes_the_stages_resources(pipeline, stage: str, alternative: int,  # type: ignore[no-untyped-def]
                                                              want: tuple[str, int | None]) -> None:
    spec = planned_stage(pipeline.stages[stage], placement(alternative))
    assert not spec.resources.any_of and not spec.resources.ordered
    assert [a.name for a in spec.resources.accelerators] == [want[0]]
    assert spec.resources.disk_size == want[1]
    assert spec.run == pipeline.stages[stage].run


def test_a_stage_with_one_request_is_launched_as_written(pipeline) -> None:  # type: ignore[no-untyped-def]
    stage = pipeline.stages["one"]
    assert planned_stage(stage, placement(1)) is stage
    assert planned_stage(pipeline.stages["prep"], placement(0)) is pipeline.stages["prep"]


def test_the_workdir_is_the_stages_relative_to_the_pipeline_file(pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert stage_workdir(pipeline, "prep") == tmp_path
    assert stage_workdir(pipeline, "one") == tmp_path / "sub" / "dir"
    assert stage_workdir(pipeline, "anyof") == Path("/opt/code")
    assert stage_workdir(pipeline, "ordered") == Path(os.path.expanduser("~/code"))


def test_the_launch_carries_everything_the_backend_needs(pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ref = ArtifactRecord("rows", "file:///s/manifests/x.json", "sha256:ab", 3, store_uri="file:///s")
    where = placement(0, nodes=2)
    launch = build_launch(pipeline, "one", where, run_id="alt-1", attempt=3, params={"k": 1},
                          secrets={"TOKEN": "v"}, base_env={"PATH": "/bin"}, inputs={"rows": tmp_path / "rows"},
                          outputs={}, input_refs={"rows": ref}, log_path=tmp_path / "stage.log")
    assert (launch.run_id, launch.stage, launch.attempt) == ("alt-1", "one", 3)
    assert launch.spec is pipeline.stages["one"] and launch.placement is where
    assert launch.workdir == tmp_path / "sub" / "dir" and launch.log_path == tmp_path / "stage.log"
    assert launch.secret_values == ("v",)
    assert launch.inputs == {"rows": tmp_path / "rows"} and launch.outputs == {} and launch.input_refs == {"rows": ref}
    # the first accelerator of the request sizes the GPUs per node; the spec's nodes, not the placement's
    assert launch.env == stage_environment(pipeline, "one", run_id="alt-1", params={"k": 1},
                                           inputs={"rows": tmp_path / "rows"}, outputs={}, gpus_per_node=2,
                                           secrets={"TOKEN": "v"}, base_env={"PATH": "/bin"}, num_nodes=1)


def test_a_dry_run_shows_placeholders_for_what_only_a_run_knows(pipeline) -> None:  # type: ignore[no-untyped-def]
    where = placement(0)
    launch = preview_launch(pipeline, "one", where)
    assert launch.run_id == "DRY-RUN" and launch.attempt == 1 and launch.placement is where
    assert launch.log_path == Path("stage.log")
    assert launch.inputs == {"rows": Path("/skyflow/inputs/rows")}
    assert launch.input_refs == {"rows": ArtifactRecord(name="rows", uri="<prep.rows once committed>",
                                                        digest="<digest>", size_bytes=0, store_uri="<store>")}
    assert launch.env["SKYFLOW_INPUT_ROWS"] == "/skyflow/inputs/rows"
    prep = preview_launch(pipeline, "prep", where)
    assert prep.outputs == {"rows": Path("/skyflow/outputs/rows")} and prep.input_refs == {}
