"""Where a stage's hours come from: earlier runs of the same work on the same kind of machine, then
the stage's estimate (``local`` on this machine), then the 1-hour fallback; the plan says which."""

from __future__ import annotations

from pathlib import Path

from tables import catalog, offer, pipeline, rules

from skyflow.planner import Placement, Plan, Policy, plan_pipeline
from skyflow.planner.candidates import stage_hours
from skyflow.spec import load_pipeline
from skyflow.spec.work import work_key

A100 = offer("aws/r", "a100", 10.0, acc="A100", count=8)


def test_hours_measured_on_this_machine_never_price_a_cloud_machine() -> None:
    p = pipeline({"train": {"resources": {"accelerators": "A100:8"}, "estimate": {"hours": {"A100": 10}}}})
    stage = p.stages["train"]
    seen = Policy(observed_hours={"train": {"local": 0.001}})
    assert stage_hours("train", stage, "A100", seen) == (10, "estimate")
    assert stage_hours("train", stage, "A100", seen, on_local=True) == (0.001, "history")
    plan = plan_pipeline(p, catalog(A100), rules(), Policy(all_clouds=True, observed_hours={"train": {"local": 0.001}}))
    assert (plan.stages["train"].hours, plan.stages["train"].hours_source) == (10, "estimate")


def test_runs_of_the_same_work_on_the_same_accelerator_come_before_the_estimate() -> None:
    p = pipeline({"train": {"resources": {"accelerators": "A100:8"}, "estimate": {"hours": {"A100": 10}}}})
    seen = Policy(all_clouds=True, observed_hours={"train": {"A100": 7.5, "H100": 1.0}})
    plan = plan_pipeline(p, catalog(A100), rules(), seen)
    assert (plan.stages["train"].hours, plan.stages["train"].hours_source) == (7.5, "history")
    assert plan.stages["train"].compute_usd == 75.0
    # machines without accelerators are their own kind: an A100 run does not price them, nor they it
    cpu = pipeline({"prep": {"estimate": 2}})
    plan = plan_pipeline(cpu, catalog(offer("aws/r", "m", 0.5)), rules(),
                         Policy(all_clouds=True, observed_hours={"prep": {"A100": 0.1}}))
    assert (plan.stages["prep"].hours, plan.stages["prep"].hours_source) == (2, "estimate")


def test_a_local_estimate_prices_this_machine_and_only_it() -> None:
    p = pipeline({"sft": {"resources": {"any_of": [{"accelerators": "A100:8"}, {"infra": "local"}]},
                          "estimate": {"hours": {"A100": 10, "local": 0.01}}}})
    here = plan_pipeline(p, catalog(A100), rules(), Policy())
    assert (here.stages["sft"].infra, here.stages["sft"].hours, here.stages["sft"].hours_source) == ("local", 0.01,
                                                                                                      "estimate")
    cloud = plan_pipeline(p, catalog(A100), rules(), Policy(all_clouds=True))
    assert (cloud.stages["sft"].infra, cloud.stages["sft"].hours) == ("aws/r", 10)


def test_a_local_stage_without_hours_for_this_machine_is_named_once() -> None:
    p = pipeline({"a": {"resources": {"any_of": [{"accelerators": "A100:8"}, {"infra": "local"}]},
                        "estimate": {"hours": {"A100": 10}}},
                  "b": {"resources": {"any_of": [{"accelerators": "A100:8"}, {"infra": "local"}]},
                        "estimate": {"hours": {"A100": 3}}}})
    plan = plan_pipeline(p, catalog(A100), rules(), Policy())
    assert [plan.stages[s].hours_source for s in "ab"] == ["fallback", "fallback"]
    assert plan.warnings == (
        "stages 'a', 'b' run on this machine, for which their estimate has no hours and no earlier run of the same "
        "work was measured: 1 h each assumed. Add local: N to the estimate hours, or run it once: the time measured "
        "is used after.",)
    seen = Policy(observed_hours={"a": {"local": 0.2}, "b": {"local": 0.1}})
    measured = plan_pipeline(p, catalog(A100), rules(), seen)
    assert [measured.stages[s].hours_source for s in "ab"] == ["history", "history"]
    assert measured.warnings == ()


def test_the_source_survives_the_plan_json_and_is_absent_for_an_estimate() -> None:
    p = pipeline({"s": {"estimate": 2}, "t": {}})
    plan = plan_pipeline(p, catalog(offer("aws/r", "m", 0.5)), rules(), Policy(all_clouds=True))
    data = plan.to_json()
    assert "hours_source" not in data["stages"]["s"]
    assert data["stages"]["t"]["hours_source"] == "fallback"
    again = Plan.from_json(data)
    assert again.stages["t"].hours_source == "fallback" and again.stages["s"].hours_source == "estimate"
    assert Placement.from_json({"infra": "local", "hours_source": "bogus"}).hours_source == "estimate"


def test_the_work_key_follows_what_the_stage_runs_with_its_params(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\nparams: {scale: demo, seed: 0}\nstages:\n"
                    "  train: {run: 'train --scale ${params.scale}'}\n  other: {run: 'true'}\n")

    def key(name: str = "train", **params: object) -> str:
        p = load_pipeline(spec, params)
        return work_key(p.name, name, p.stages[name])

    assert key() == key(seed=1)  # a param the stage does not use does not change its work
    assert key() != key(scale="full")
    assert key("other") == key("other", scale="full")
    spec.write_text(spec.read_text().replace("name: p", "name: q"))
    assert key() != work_key("p", "train", load_pipeline(spec).stages["train"])
