"""The article's SkyPilot task YAMLs work as stages, pasted in or referenced with `task:`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from skyflow.errors import SpecError
from skyflow.spec.loader import load_pipeline

SEED = Path(__file__).parents[2] / "fixtures" / "seed_tasks"
TASKS = sorted(SEED.glob("*.yaml"))
UNSUPPORTED = {"10-secure-training.yaml"}


def _pasted(task: Path, tmp_path: Path) -> Path:
    body = textwrap.indent(task.read_text(), "    ")
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"name: seed\nstages:\n  train:\n{body}")
    return path


def _referenced(task: Path, tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"name: seed\nstages:\n  train:\n    task: {task}\n")
    return path


def _direct(task: Path, tmp_path: Path) -> Path:
    return task


FORMS = [_pasted, _referenced, _direct]
FORM_IDS = ["pasted", "task-ref", "task-file-as-pipeline"]


def test_all_eleven_seed_tasks_are_here() -> None:
    assert len(TASKS) == 11


@pytest.mark.parametrize("task", [t for t in TASKS if t.name not in UNSUPPORTED], ids=lambda t: t.stem)
@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
def test_seed_task_validates_as_a_stage(task: Path, form, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pipeline = load_pipeline(form(task, tmp_path))
    assert len(pipeline.order) == 1
    assert pipeline.stages[pipeline.order[0]].run


def test_seed_task_fields_keep_skypilot_meaning(tmp_path: Path) -> None:
    stages = {t.stem: load_pipeline(_referenced(t, tmp_path)).stages["train"]
              for t in TASKS if t.name not in UNSUPPORTED}
    first = stages["01-universal-task"]
    assert (first.resources.accelerators[0].name, first.resources.accelerators[0].count) == ("A100", 8)
    assert first.resources.cloud == "aws" and first.num_nodes == 2
    assert stages["02-gpu-sharing"].resources.accelerators[0].count == 0.25
    spot = stages["03-spot-recovery"].resources
    assert spot.use_spot and spot.job_recovery is not None  # spot_recovery is the older job_recovery
    sync = stages["04-data-mounts-sync"]
    assert sync.sync is not None and sync.sync.mode == "incremental" and "/data/training" in sync.file_mounts
    llama = stages["05-llama-70b-training"]
    assert llama.resources.location() == ("aws", "us-west-2", None) and llama.num_nodes == 4
    service = stages["06-llm-inference-service"]
    assert service.service is not None and service.service.replica_count() == 3
    assert service.service.readiness_probe.path == "/health" and service.resources.ports == ("8000",)
    assert stages["07-multimodal-training"].resources.memory.amount == 256  # type: ignore[union-attr]
    memory = stages["11-max-gpu-efficiency"].resources.memory
    assert memory is not None and memory.at_least and memory.amount == 500


@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
def test_unsupported_seed_fields_are_named_with_what_to_use(form, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = SEED / "10-secure-training.yaml"
    with pytest.raises(SpecError) as info:
        load_pipeline(form(task, tmp_path))
    message = str(info.value)
    assert "unknown field 'networking'" in message and "vpc_name" in message and "config:" in message
    assert "unknown field 'encryption'" in message and "bucket" in message


def test_task_file_errors_point_into_the_task_file(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  accelerators: A100:8\n  use_spot: perhaps\nrun: echo\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: p\nstages:\n  t:\n    task: task.yaml\n")
    with pytest.raises(SpecError, match=rf"{task}:3:13: stages.t.resources.use_spot"):
        load_pipeline(pipeline)


def test_stage_fields_override_the_task_file(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"name: p\nstages:\n  t:\n    task: {SEED / '05-llama-70b-training.yaml'}\n"
        "    resources: {use_spot: false}\n    num_nodes: 1\n")
    stage = load_pipeline(pipeline).stages["t"]
    assert stage.num_nodes == 1 and not stage.resources.use_spot
    assert stage.resources.accelerators[0].name == "A100"  # kept from the task file
