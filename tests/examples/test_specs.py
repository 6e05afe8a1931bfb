"""Every template and example validates, and the decorated RLHF pipeline is the YAML one."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyflow import load_pipeline
from tests.examples.conftest import REPO

TEMPLATES = sorted((REPO / "pipelines").glob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").glob("*/pipeline.yaml"))


def test_the_five_templates_are_there() -> None:
    assert {p.name for p in TEMPLATES} >= {"sft-rm-ppo.yaml", "train-eval-serve.yaml", "nightly-retrain.yaml",
                                           "sweep-fanout.yaml", "multi-cloud-data.yaml"}


@pytest.mark.parametrize("path", TEMPLATES + EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pipeline_validates(path: Path) -> None:
    pipeline = load_pipeline(path)
    assert pipeline.order
    assert path.read_text().startswith("#"), "each pipeline file opens with a comment saying when to use it"


def test_full_scale_is_one_override_away() -> None:
    for path in EXAMPLES:
        assert load_pipeline(path, {"scale": "full"}).spec.params["scale"] == "full"


def test_every_example_stage_can_run_locally_and_in_the_cloud() -> None:
    for path in EXAMPLES:
        for name, stage in load_pipeline(path).stages.items():
            places = stage.resources.alternatives()
            assert any(r.infra == "local" for r in places), name
            assert any(r.infra != "local" for r in places), name


def test_schedule_template_has_cron_and_data_trigger() -> None:
    schedule = load_pipeline(REPO / "pipelines" / "nightly-retrain.yaml").spec.schedule
    assert schedule is not None and schedule.cron and schedule.on_change == ("events",)


def test_multi_cloud_template_reads_s3_and_gcs_with_sizes() -> None:
    inputs = load_pipeline(REPO / "pipelines" / "multi-cloud-data.yaml").spec.inputs.values()
    assert {i.uri.split("://")[0] for i in inputs} == {"s3", "gs"}
    assert all(i.infra and i.size_gb for i in inputs)


def test_rlhf_python_and_yaml_give_the_same_dag() -> None:
    yaml = load_pipeline(REPO / "examples" / "rlhf" / "pipeline.yaml")
    python = load_pipeline(f"{REPO / 'examples' / 'rlhf' / 'pipeline.py'}:rlhf")
    assert python.name == yaml.name
    assert python.order == yaml.order
    assert set(python.edges) == set(yaml.edges)
    assert python.ordering == yaml.ordering
    assert python.spec.params == yaml.spec.params
    assert python.spec.inputs == yaml.spec.inputs
    for name, stage in yaml.stages.items():
        twin = python.stages[name]
        assert twin.outputs == stage.outputs, name
        assert twin.resources == stage.resources, name
        assert twin.estimate == stage.estimate, name
        assert twin.retries == stage.retries, name
