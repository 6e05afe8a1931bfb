"""What a plan or a planning error tells the user: GPU boxes for CPU stages, guessed hours, typos in
pins, and the best a deadline or budget could have had; a budget plans the fastest plan within it."""

from __future__ import annotations

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.errors import PlanningError
from skyflow.planner import Policy, plan_pipeline

CLOUDS = Policy(all_clouds=True)


def test_a_cpu_stage_on_a_gpu_machine_says_so_with_its_price() -> None:
    cat = catalog(offer("lambda/r", "gpu_1x_rtx6000", 0.69, acc="RTX6000", count=1, cpus=14),
                  offer("lambda/r", "cpu_8x", 0.90, cpus=8), offer("aws/q", "g4dn.2xlarge", 0.75, acc="T4", count=1))
    p = pipeline({"prep": {"resources": {"cpus": "8+"}, "estimate": 1},
                  "post": {"resources": {"cpus": "8+", "infra": "aws"}, "estimate": 1},
                  "train": {"resources": {"accelerators": "RTX6000:1"}, "estimate": 1}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS)
    assert plan.warnings == (
        "stage 'prep' asks for no accelerator but is planned on gpu_1x_rtx6000 (RTX6000:1) at $0.69/h in lambda/r, "
        "the cheapest machine there with cpus 8+; the cheapest without accelerators there is cpu_8x at $0.90/h. "
        "Name an instance_type to choose the machine.",
        "stage 'post' asks for no accelerator but is planned on g4dn.2xlarge (T4:1) at $0.75/h in aws/q, the "
        "cheapest machine there with cpus 8+, on aws; none without accelerators has that there. Name an "
        "instance_type to choose the machine.")


def test_cpu_stages_on_one_gpu_machine_share_one_warning() -> None:
    cat = catalog(offer("lambda/r", "gpu_2x", 0.69, acc="RTX6000", count=2, cpus=14),
                  offer("lambda/r", "cpu_8x", 0.90, cpus=8))
    p = pipeline({"prep": {"resources": {"cpus": "8+"}, "estimate": 1},
                  "post": {"resources": {"cpus": "8+"}, "estimate": 1}})
    assert plan_pipeline(p, cat, rules(), CLOUDS).warnings == (
        "stages 'prep', 'post' ask for no accelerator but are planned on gpu_2x (RTX6000:2) at $0.69/h in "
        "lambda/r, the cheapest machine there with cpus 8+; the cheapest without accelerators there is cpu_8x at "
        "$0.90/h. Name an instance_type to choose the machine.",)


def test_stages_on_the_one_hour_fallback_are_named() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "l4", 1.0, acc="L4", count=1),
                  offer("aws/r", "m", 0.4))
    p = pipeline({"prep": {}, "post": {},
                  "train": {"resources": {"accelerators": ["A100:8", "L4:1"]}, "estimate": {"hours": {"A100": 10}}},
                  "known": {"estimate": 2}})
    plan = plan_pipeline(p, cat, rules(), CLOUDS)
    assert plan.stages["train"].instance_type == "l4"  # priced at 1 h: the reason to say so
    assert plan.warnings == (
        "stage 'train' is planned on L4, for which neither its estimate nor the run history has hours: priced at "
        "1 h, the fallback. Add L4: N to its estimate hours.",
        "stages 'prep', 'post' have no estimate and no run history: priced at 1 h each, the fallback. Give "
        "estimate: {hours: N} for a real price and critical path.")
    assert plan_pipeline(pipeline({"solo": {}}), cat, rules(), CLOUDS).warnings == (
        "stage 'solo' has no estimate and no run history: priced at 1 h, the fallback. Give estimate: {hours: N} "
        "for a real price and critical path.",)
    # the run history fills in what the estimate leaves out, before the fallback
    seen = Policy(all_clouds=True, observed_hours={"train": {"L4": 200.0}, "prep": {"default": 0.5},
                                                   "post": {"default": 0.5}})
    plan = plan_pipeline(p, cat, rules(), seen)
    assert (plan.stages["train"].instance_type, plan.stages["train"].hours) == ("a100", 10)
    assert plan.warnings == ()


def test_region_typos_and_regions_of_another_cloud_get_did_you_mean_and_a_nearest_in_the_pinned_cloud() -> None:
    cat = catalog(offer("aws/us-east-1", "g4dn", 0.53, acc="T4", count=1),
                  offer("aws/us-west-2", "g4dn", 0.60, acc="T4", count=1),
                  offer("gcp/us-central1", "n1", 0.35, acc="T4", count=1))
    t4 = {"accelerators": "T4:1"}
    with pytest.raises(PlanningError, match=r"aws has no region 'us-est-1'; did you mean us-east-1, us-west-2\?\); "
                                            r"nearest: g4dn .* in aws/us-east-1 at \$0.53/h; g4dn .* aws/us-west-2"):
        plan_pipeline(pipeline({"s": {"resources": {**t4, "infra": "aws/us-est-1"}}}), cat, rules(), CLOUDS)
    # gcp's T4 is the cheapest anywhere, but the nearest respect the aws pin
    with pytest.raises(PlanningError, match=r"'us-central1' is a region of gcp, not aws.*\); nearest: g4dn .* in "
                                            r"aws/us-east-1 at \$0.53/h; g4dn .* aws/us-west-2 at \$0.60/h$"):
        plan_pipeline(pipeline({"s": {"resources": {**t4, "infra": "aws/us-central1"}}}), cat, rules(), CLOUDS)
    with pytest.raises(PlanningError, match=r"region filters .* removed it \(gcp has no region 'us-centrl1'; "
                                            r"did you mean us-central1\?\)"):
        plan_pipeline(pipeline({"s": {"resources": t4}}), cat, rules(), Policy(infra=("gcp/us-centrl1",)))


def test_a_budget_buys_the_fastest_plan_within_it() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8),
                  offer("aws/r", "h200", 50.0, acc="H200", count=8))
    p = pipeline({"t": {"resources": {"accelerators": ["A100:8", "H100:8", "H200:8"]},
                        "estimate": {"hours": {"A100": 10, "H100": 4, "H200": 3}}}})
    plan = plan_pipeline(p, cat, rules(), Policy(all_clouds=True, max_cost_usd=130))
    assert (plan.objective, plan.stages["t"].instance_type, plan.total_usd) == ("time", "h100", 120)
    assert plan_pipeline(p, cat, rules(), Policy(all_clouds=True, max_cost_usd=150)).stages["t"].instance_type == "h200"
    assert plan_pipeline(p, cat, rules(), CLOUDS).objective == "cost"


def test_an_infeasible_deadline_or_budget_names_it_and_the_best_there_is() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8))
    p = pipeline({"t": {"resources": {"accelerators": ["A100:8", "H100:8"]},
                        "estimate": {"hours": {"A100": 10, "H100": 4}}}})
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan finishes within the deadline of "
                                            r"3 h: the fastest plan takes 4.00 h and costs \$120.00\."):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=3))
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan costs at most the budget of "
                                            r"\$50.00: the cheapest plan costs \$100.00 and takes 10.00 h\."):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, max_cost_usd=50))
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan meets both the deadline of 5 h "
                                            r"and the budget of \$110.00: within the deadline the cheapest plan "
                                            r"costs \$120.00; within the budget the fastest plan takes 10.00 h\."):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=5, max_cost_usd=110))
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan costs at most the budget of "
                                            r"\$99.50: the cheapest plan costs \$100.00"):  # missed by 50 cents
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, max_cost_usd=99.5))
    # missed by half an hour; met exactly by the fastest plan, so only the budget is named
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan finishes within the deadline of "
                                            r"3.5 h: the fastest plan takes 4.00 h"):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=3.5))
    with pytest.raises(PlanningError, match=r"^no plan meets the constraints: no plan costs at most the budget of "
                                            r"\$50.00: the cheapest plan costs \$100.00 and takes 10.00 h\. Raise"):
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=4, max_cost_usd=50))


def test_each_missed_constraint_is_named_alone_and_within_the_budget_the_fastest_is_the_fastest() -> None:
    cat = catalog(offer("aws/r", "a100", 10.0, acc="A100", count=8), offer("aws/r", "h100", 30.0, acc="H100", count=8),
                  offer("aws/r", "l40", 15.0, acc="L40", count=8), offer("aws/r", "t4", 8.0, acc="T4", count=8))
    p = pipeline({"t": {"resources": {"accelerators": ["A100:8", "H100:8", "L40:8", "T4:8"]},
                        "estimate": {"hours": {"A100": 10, "H100": 4, "L40": 7, "T4": 12}}}})
    fastest, cheapest = "takes 4.00 h and costs $120.00", "costs $96.00 and takes 12.00 h"
    with pytest.raises(PlanningError) as both:  # both missed: each named once, nothing about meeting both
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=3, max_cost_usd=50))
    assert str(both.value) == (
        f"no plan meets the constraints: no plan finishes within the deadline of 3 h: the fastest plan {fastest}; no "
        f"plan costs at most the budget of $50.00: the cheapest plan {cheapest}. Raise the deadline or budget, or "
        "allow more clouds and regions.")
    with pytest.raises(PlanningError) as exact:  # the cheapest plan costs the budget exactly: only the deadline
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=3, max_cost_usd=96))
    assert "budget" not in str(exact.value).split(". Raise")[0]
    with pytest.raises(PlanningError) as apart:  # each alone is met; within $110 the fastest is the L40's 7 h
        plan_pipeline(p, cat, rules(), Policy(all_clouds=True, deadline_h=5, max_cost_usd=110))
    assert str(apart.value).startswith(
        "no plan meets the constraints: no plan meets both the deadline of 5 h and the budget of $110.00: within the "
        "deadline the cheapest plan costs $120.00; within the budget the fastest plan takes 7.00 h.")
