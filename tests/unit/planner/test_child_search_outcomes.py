"""What a plan searched in the child becomes for each way the search can end: optimal, stopped with a
plan, stopped before one, infeasible, failed; and the progress lines it prints meanwhile. The child's
outcome is the real search's, changed where a case needs it (a stopped search cannot be had on demand)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest
from test_time_limit import EGRESS, _large_case

from skyflow.errors import PlanningError
from skyflow.planner import Policy, highs_child, plan_pipeline
from skyflow.planner import core as core_module
from skyflow.planner import milp as milp_module
from skyflow.planner import solve as solve_module
from skyflow.planner.forest import forest_marginals
from skyflow.planner.highs_child import ChildOutcome

Report = Callable[[float | None, float], None] | None
Change = Callable[[ChildOutcome, Report], ChildOutcome]
CASE = _large_case(40, seed=11)


@pytest.fixture(autouse=True)
def in_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milp_module, "CHILD_FROM_NONZEROS", 0)
    keep_every_placement(monkeypatch)


def keep_every_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forest relaxation's bound as it is, but no placement dropped by its per-placement bounds: they prove
    this case's start optimal before any program is built, and these tests are about the program's search."""
    real = forest_marginals  # what solve and core import

    def bound_only(problem: Any, keep: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        bound, marginals = real(problem, keep)
        return bound, [np.full(len(m), -np.inf) for m in marginals]

    monkeypatch.setattr(solve_module, "forest_marginals", bound_only)
    monkeypatch.setattr(core_module, "forest_marginals", bound_only)  # the start's search begins from it


def searched(monkeypatch: pytest.MonkeyPatch, change: Change, objective: Literal["cost", "time"] = "cost",
             lines: list[str] | None = None) -> Any:
    real = highs_child.run_in_child

    def run_in_child(h: Any, deadline: float, clock: Callable[[], float], report: Report = None) -> ChildOutcome:
        return change(real(h, deadline, clock, None), report)  # the child's own progress is timing's: left out

    monkeypatch.setattr(highs_child, "run_in_child", run_in_child)
    p, cat = CASE
    return plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective=objective, time_limit_s=60),
                         baseline=False, progress=None if lines is None else lines.append)


def exact(objective: Literal["cost", "time"] = "cost") -> Any:
    p, cat = CASE
    return plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective=objective, time_limit_s=0), baseline=False)


def program_lines(lines: list[str]) -> list[str]:
    return [line.split(": ", 1)[1] for line in lines if "integer program:" in line]


def test_progress_shows_the_best_plan_and_the_bound_in_dollars(monkeypatch: pytest.MonkeyPatch) -> None:
    def change(outcome: ChildOutcome, report: Report) -> ChildOutcome:
        assert report is not None
        report(None, 1.0)  # before the search hands back a plan: the start is the best
        report(250.0, 200.0)
        report(250.0, 249.5)
        report(100.0, 100.5)  # a bound above the best found (HiGHS's presolved space): no negative share
        report(0.5, 0.25)
        report(0.0, -1.0)  # nothing to show as a share of 0
        report(-3.0, -4.0)
        return outcome

    lines: list[str] = []
    plan = searched(monkeypatch, change, lines=lines)
    first, *rest = program_lines(lines)
    assert rest == ["integer program: best $250.00, bound $200.00 (within 20.00%)",
                    "integer program: best $250.00, bound $249.50 (within 0.20%)",
                    "integer program: best $100.00, bound $100.50 (within 0.00%)",
                    "integer program: best $0.50, bound $0.25 (within 50.00%)"]
    found = re.fullmatch(r"integer program: best \$([\d,]+\.\d\d), bound \$1\.00 \(within (\d+\.\d\d)%\)", first)
    assert found, first
    start = float(found[1].replace(",", ""))
    assert start >= plan.total_usd - 0.005  # the start is a plan: no cheaper than the optimum
    assert found[2] == f"{100 * (start - 1.0) / start:.2f}"


def test_progress_under_the_time_objective_is_in_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    def change(outcome: ChildOutcome, report: Report) -> ChildOutcome:
        assert report is not None
        report(None, 0.5)
        report(12.5, 10.0)
        return outcome

    lines: list[str] = []
    plan = searched(monkeypatch, change, objective="time", lines=lines)
    # The fastest plan is searched first (on this case its start is already the fastest: 45 h), then the
    # cheapest plan at that time, from the fastest plan found, which costs more than the cheapest.
    hours_start, hours_found, usd_start, usd_found = program_lines(lines)
    assert plan.total_hours == 45.0
    assert hours_start == f"integer program: best 45.00 h, bound 0.50 h (within {100 * 44.5 / 45:.2f}%)"
    assert hours_found == "integer program: best 12.50 h, bound 10.00 h (within 20.00%)"
    found = re.fullmatch(r"integer program: best \$([\d,]+\.\d\d), bound \$0\.50 \(within [\d.]+%\)", usd_start)
    assert found and float(found[1].replace(",", "")) >= plan.total_usd, usd_start
    assert usd_found == "integer program: best $12.50, bound $10.00 (within 20.00%)"


def test_an_optimum_the_child_proves_is_the_plan_with_no_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = searched(monkeypatch, lambda outcome, _: outcome)
    best = exact()
    assert plan.gap == 0 and plan.lower_bound_usd is None
    assert plan.total_usd == pytest.approx(best.total_usd)


@pytest.mark.parametrize("status", ["kTimeLimit", "kOptimal"])
def test_a_bound_below_the_plan_found_is_its_lower_bound(monkeypatch: pytest.MonkeyPatch, status: str) -> None:
    """Stopped at the limit, or "optimal" while the bound the child reports is lower (a tolerance of
    HiGHS's), the plan's bound is the child's, not the plan's own cost."""
    def change(outcome: ChildOutcome, _: Report) -> ChildOutcome:
        assert outcome.status == "kOptimal" and outcome.objective is not None
        return dataclasses.replace(outcome, status=status, bound=outcome.objective - 0.01)

    plan = searched(monkeypatch, change)
    assert plan.total_usd == pytest.approx(exact().total_usd)
    assert plan.lower_bound_usd == pytest.approx(plan.total_usd - 0.01, abs=1e-4)
    assert plan.gap == pytest.approx(0.01 / plan.total_usd, rel=1e-3)


def test_an_optimum_within_the_tolerance_of_its_bound_has_no_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    def change(outcome: ChildOutcome, _: Report) -> ChildOutcome:
        assert outcome.objective is not None
        return dataclasses.replace(outcome, bound=outcome.objective - 1e-9 * abs(outcome.objective))

    plan = searched(monkeypatch, change)
    assert plan.gap == 0 and plan.lower_bound_usd is None


def test_a_search_ended_before_its_first_plan_keeps_the_start_with_the_bound_it_proved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    optimum = exact().total_usd
    for proved in (optimum - 0.01, optimum - 0.5):  # above the forest relaxation's bound (~$0.07 below), then under

        def change(outcome: ChildOutcome, _: Report, proved: float = proved) -> ChildOutcome:
            return ChildOutcome(False, None, None, None, proved)

        plan = searched(monkeypatch, change)
        assert plan.total_usd >= optimum - 1e-6
        assert plan.gap == pytest.approx((plan.total_usd - plan.lower_bound_usd) / plan.total_usd, rel=1e-3)
        if proved > optimum - 0.05:
            assert plan.lower_bound_usd == pytest.approx(proved, abs=1e-4)
        else:  # the larger bound is kept
            assert proved + 0.4 < plan.lower_bound_usd < optimum - 0.01


def test_a_search_that_failed_with_no_plan_to_fall_back_on_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def change(outcome: ChildOutcome, _: Report) -> ChildOutcome:
        return ChildOutcome(False, None, None, None, -np.inf,
                            error="the solver's process ended with signal SIGKILL")

    original = milp_module.MilpModel.solve

    def solve_without_start(self: Any, objective: Any, what: str, start: Any = None, **kw: Any) -> Any:
        return original(self, objective, what, None, **kw)  # a start would be the plan to fall back on

    monkeypatch.setattr(milp_module.MilpModel, "solve", solve_without_start)
    with pytest.raises(PlanningError) as caught:
        searched(monkeypatch, change)
    assert str(caught.value).startswith("the solver stopped before finding the cheapest plan: the solver's process "
                                        "ended with signal SIGKILL (time limit ")
    assert str(caught.value).endswith(" s; raise --time-limit, 0 for none)")


def test_a_search_the_child_finds_infeasible_is_an_infeasible_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    def change(outcome: ChildOutcome, _: Report) -> ChildOutcome:
        return ChildOutcome(True, "kInfeasible", None, None, -np.inf)

    with pytest.raises(PlanningError, match=r"no plan meets the constraints \(deadline, budget\) while finding "
                                            r"the cheapest plan"):
        searched(monkeypatch, change)


def test_the_child_reports_its_best_plan_and_bound_while_it_searches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its reports are paced on the real clock; with no pause between them, which reports come depends
    # only on how often HiGHS calls back (a cheapest plan under a deadline: many times).
    monkeypatch.setattr(highs_child, "_BOUND_EVERY_S", 0.0)
    p, cat = _large_case(24, seed=3)
    lines: list[str] = []
    plan = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, deadline_h=32.83, time_limit_s=600),
                         baseline=False, progress=lines.append)
    assert plan.gap == 0
    searching = [line for line in lines if "integer program: best" in line]
    assert len(searching) >= 2, lines
    for line in searching:
        found = re.fullmatch(r"[\d.]+ s: integer program: best \$([\d,]+\.\d\d), bound \$([\d,]+\.\d\d) "
                             r"\(within [\d.]+%\)", line)
        assert found, line
        assert float(found[2].replace(",", "")) <= plan.total_usd + 0.005 <= float(found[1].replace(",", "")) + 0.01
