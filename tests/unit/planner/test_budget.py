"""One budget for the whole planning call: driven by a clock the test controls (no waiting, no timing)."""

from __future__ import annotations

import re

import pytest
from tables import catalog, offer, pipeline, rules
from test_time_limit import EGRESS, _large_case

from skyflow.planner import CachedCopy, Policy, plan_pipeline
from skyflow.planner.budget import MIN_STEP_S, RESERVE_FRACTION, Budget
from skyflow.planner.core import _problem
from skyflow.planner.milp import InfeasibleError
from skyflow.planner.problem import evaluate
from skyflow.planner.reasons import infeasible_error
from skyflow.planner.solve import cheapest_per_location


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_from_when_the_command_started_and_keeps_a_reserve() -> None:
    clock = Clock()
    budget = Budget(10.0, clock=clock, started=clock.now - 3.0)  # loading the pipeline took 3 s
    assert budget.left() == pytest.approx(7.0)
    assert budget.for_search() == pytest.approx(7.0 - RESERVE_FRACTION * 10.0)
    assert budget.share(0.5) == pytest.approx(3.5)
    side = budget.part(0.25)
    assert side.left() == pytest.approx(1.75)
    clock.now += 20.0
    assert budget.expired() and budget.left() == 0.0
    # spent: every search step still gets the least step, so a plan always comes back
    assert budget.for_search() == MIN_STEP_S and budget.share(0.5) == MIN_STEP_S
    unlimited = Budget(None, clock=clock)
    assert unlimited.left() is None and unlimited.for_search() is None and not unlimited.expired()


def test_progress_is_reported_through_the_callback_with_the_time_since_the_start() -> None:
    clock = Clock()
    heard: list[str] = []
    budget = Budget(5.0, clock=clock, started=clock.now - 1.5, progress=heard.append)
    budget.report("finding candidates")
    budget.part(0.5).report("pricing the baseline")
    assert heard == ["1.5 s: finding candidates", "1.5 s: pricing the baseline"]


def test_a_plan_that_needs_the_integer_program_reports_its_phases() -> None:
    p, cat = _large_case(40, seed=4)
    heard: list[str] = []
    plan = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True), baseline=False, progress=heard.append)
    assert plan.solver == "milp"
    text = "\n".join(heard)
    assert "finding candidates for 40 stages" in text and "building the integer program" in text


PROVEN = "the start costs no more than the forest relaxation's bound: proven optimal"


def test_the_baseline_reports_each_clouds_search_to_the_same_progress() -> None:
    # A diamond with egress: all on aws, all on gcp and the plan itself each need a search (the forest
    # bound proves each start optimal, so no integer program is built).
    cat = catalog(offer("aws/r1", "m", 1.0), offer("aws/r2", "m", 1.2), offer("gcp/r1", "n", 1.1),
                  offer("gcp/r2", "n", 0.9))
    p = pipeline({"a": {"outputs": {"o": 50}, "inputs": {"raw": "raw"}},
                  "b": {"inputs": {"x": "a.o"}, "outputs": {"o": 50}},
                  "c": {"inputs": {"x": "a.o"}, "outputs": {"o": 50}}, "d": {"inputs": {"x": "b.o", "y": "c.o"}}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r1", "size_gb": 100}})
    heard: list[str] = []
    egress = rules(("aws", "aws", 0.02), ("gcp", "gcp", 0.01), ("aws", "*", 0.09), ("gcp", "*", 0.12))
    plan = plan_pipeline(p, cat, egress, Policy(all_clouds=True), progress=heard.append)
    assert (plan.solver, plan.baseline_cloud) == ("milp", "aws")
    assert [re.sub(r"^\d+\.\d s: ", "", line) for line in heard] == [
        "finding candidates for 4 stages", "pricing the baseline: every stage on one of 2 clouds",
        "searching 7 placements of 4 stages for a start", PROVEN,  # aws
        "searching 8 placements of 4 stages for a start", PROVEN,  # gcp
        "searching 14 placements of 4 stages for a start", PROVEN]


def test_the_recompute_without_the_cache_reports_its_search_to_the_same_progress() -> None:
    # b's output is cached in gcp/r2, cheaper to fetch than to recompute: the plan reuses it and prices
    # the plan it would be without it (14 placements, b's copy gone) on the same budget.
    cat = catalog(offer("aws/r1", "m", 1.0), offer("aws/r2", "m", 1.2), offer("gcp/r1", "n", 1.1),
                  offer("gcp/r2", "n", 0.9))
    p = pipeline({"a": {"outputs": {"o": 50}, "inputs": {"raw": "raw"}},
                  "b": {"inputs": {"x": "a.o"}, "outputs": {"o": 50}, "estimate": 10},
                  "c": {"inputs": {"x": "a.o"}, "outputs": {"o": 50}}, "d": {"inputs": {"x": "b.o", "y": "c.o"}}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r1", "size_gb": 100}})
    heard: list[str] = []
    egress = rules(("aws", "aws", 0.02), ("gcp", "gcp", 0.01), ("aws", "*", 0.09), ("gcp", "*", 0.12))
    policy = Policy(all_clouds=True, cached={"b": (CachedCopy("gcp/r2", 50.0),)})
    plan = plan_pipeline(p, cat, egress, policy, progress=heard.append)
    assert (plan.stages["b"].cached, plan.recompute_usd) == (True, 13.0)
    assert [re.sub(r"^\d+\.\d s: ", "", line) for line in heard][-4:] == [
        "searching 12 placements of 4 stages for a start", PROVEN,  # plan
        "searching 14 placements of 4 stages for a start", PROVEN]


def test_a_budget_spent_before_planning_starts_still_gives_a_valid_plan_and_an_honest_gap() -> None:
    """The command spent its whole time limit loading: every phase gets only its least step."""
    p, cat = _large_case(120, seed=5)
    exact = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=0), baseline=False)
    clock = Clock()
    late = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=1.0), baseline=True,
                         started=clock.now - 60.0, clock=clock)
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    chosen = [problem.options[s].index(late.stages[name]) for s, name in enumerate(problem.names)]
    assert evaluate(problem, chosen).total_usd == pytest.approx(late.total_usd)
    assert late.total_usd >= exact.total_usd - 1e-6
    bound = late.total_usd if late.lower_bound_usd is None else late.lower_bound_usd
    assert bound <= exact.total_usd + 1e-6
    assert late.baseline_usd is not None and late.baseline_usd >= exact.total_usd - 1e-6


def test_explaining_an_infeasible_deadline_is_bounded_by_the_budget_and_still_names_it() -> None:
    cat = catalog(offer("aws/r0", "slow", 1.0), offer("gcp/r0", "slow2", 2.0))
    p = pipeline({"a": {"estimate": 3}, "b": {"estimate": 4, "depends_on": ["a"]}})
    policy = Policy(all_clouds=True, deadline_h=5.0, time_limit_s=1.0)
    problem, _ = _problem(p, cat, EGRESS, policy)
    keep = cheapest_per_location(problem)
    clock = Clock()
    spent = Budget(1.0, clock=clock, started=clock.now - 30.0)
    error = infeasible_error(problem, keep, policy, spent)
    assert isinstance(error, InfeasibleError)
    assert "no plan finishes within the deadline of 5 h" in str(error)
    assert "7.00 h" in str(error)


def test_a_budget_expires_only_when_nothing_is_left() -> None:
    now = [0.0]
    budget = Budget(10.0, clock=lambda: now[0], started=0.0)
    now[0] = 9.5
    assert budget.left() == 0.5 and not budget.expired()
    now[0] = 10.0
    assert budget.expired()


def test_a_plan_is_timed_on_the_clock_it_is_given() -> None:
    clock = Clock()
    heard: list[str] = []
    p = pipeline({"a": {"outputs": {"o": 1}}, "b": {"inputs": {"i": "a.o"}}})
    plan = plan_pipeline(p, catalog(offer("aws/us-east-1", "m5", 1.0)), EGRESS, Policy(), started=clock.now - 2.0,
                         clock=clock, progress=heard.append)
    assert heard and all(line.startswith("2.0 s: ") for line in heard)
    assert plan.stats["planning_s"] == 2.0
