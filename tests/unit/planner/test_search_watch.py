"""How the integer program's search is watched: its progress line, and the deadline that stops HiGHS
wherever it is, in the branch and bound or in an LP.

The clock is the budget's, stepped a fixed amount each time it is read, so that what the watch does
depends on how often HiGHS calls back and never on how fast this machine is.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from typing import Any

import highspy
import numpy as np
import pytest
from tables import rules
from test_time_limit import EGRESS, EGRESS_RATES, _large_case

from skyflow.errors import PlanningError
from skyflow.planner import Plan, Policy, plan_pipeline
from skyflow.planner.budget import Budget
from skyflow.planner.components import independent_parts
from skyflow.planner.core import _problem
from skyflow.planner.milp import MilpModel, _quiet_highs, _watch


def _line(unit: str) -> re.Pattern[str]:
    figure = r"\$([\d,]+\.\d\d)" if unit == "usd" else r"([\d,]+\.\d\d) h"
    return re.compile(rf"(\d+\.\d) s: integer program: best {figure}, bound {figure} \(within (\d+\.\d\d)%\)")


def _stepping_clock(step_s: float) -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def _model(stages: int, seed: int, *, deadline_h: float | None = None, max_cost_usd: float | None = None,
           price_scale: float = 1.0, egress: Any = EGRESS) -> MilpModel:
    p, cat = _large_case(stages, seed=seed, price_scale=price_scale)
    problem, _ = _problem(p, cat, egress, Policy(all_clouds=True, time_limit_s=0))
    model = MilpModel(problem, [np.arange(len(o)) for o in problem.options], with_time=True)
    if deadline_h is not None:
        model.add_row(model.makespan_row(), hi=deadline_h)
    if max_cost_usd is not None:
        model.add_row(model.cost_row(), hi=max_cost_usd)
    return model


def _search(model: MilpModel, objective: str, step_s: float) -> tuple[float, list[str]]:
    """The optimum found with the search watched on a stepping clock, and the progress lines."""
    lines: list[str] = []
    budget = Budget(None, clock=_stepping_clock(step_s), progress=lines.append)
    vector = model.cost_objective() if objective == "cost" else model.makespan_objective()
    x = model.solve(vector, f"the {objective} optimum", budget=budget)
    optimum = float(vector @ x)
    assert model.bound == pytest.approx(optimum)
    plain = _quiet_highs()  # the same program, unwatched, with HiGHS's own settings for an exact search
    plain.passModel(model._highs_lp(vector))
    plain.setOptionValue("mip_rel_gap", 0.0)
    plain.run()
    assert optimum == pytest.approx(plain.getInfo().objective_function_value, rel=1e-9)
    return optimum, lines


# Each a program HiGHS calls back many times (its cut loop) before it proves the optimum: the
# cheapest plans under a deadline (a knapsack-like row), the first with a gap under $1 while it is
# still reported, the second with a gap of 70 % for a while; and the fastest plan under a budget.
@pytest.mark.parametrize(("stages", "seed", "objective", "row"), [
    (12, 1, "cost", {"deadline_h": 24.42}), (24, 3, "cost", {"deadline_h": 32.83}),
    (12, 1, "time", {"max_cost_usd": 140.0})])
def test_the_search_reports_its_best_plan_and_bound_once_a_second(stages: int, seed: int, objective: str,
                                                                    row: dict[str, float]) -> None:
    optimum, lines = _search(_model(stages, seed, **row), objective, step_s=0.25)
    assert len(lines) >= (10 if stages == 24 else 1)
    parsed = []
    for line in lines:
        match = _line("usd" if objective == "cost" else "hours").fullmatch(line)
        assert match, line
        at, best, bound, within = float(match[1]), _figure(match[2]), _figure(match[3]), float(match[4])
        assert bound <= optimum + 0.005 and best >= optimum - 0.005  # a bound below, a plan found above
        # recomputed from the figures shown, each rounded to within 0.005, as the share is
        assert within == pytest.approx(100 * (best - bound) / best, abs=100 * 0.01 / best + 0.006)
        parsed.append((at, best, bound))
    times = [at for at, _, _ in parsed]
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(times))  # once a second
    assert all(a[1] >= b[1] and a[2] <= b[2] for a, b in itertools.pairwise(parsed))  # it only closes


def test_no_line_is_reported_before_the_search_has_a_plan() -> None:
    # A clock step past the report interval: every call back may report, the first ones come before
    # HiGHS has found any plan (its best is then infinite).
    _, lines = _search(_model(24, 3, deadline_h=32.83), "cost", step_s=2.0)
    assert len(lines) >= 2
    assert all(_line("usd").fullmatch(line) for line in lines), lines


def test_a_plan_under_a_dollar_is_reported() -> None:
    thousandths = rules(*[(source, dest, rate / 1000) for source, dest, rate in EGRESS_RATES])
    cheap = _model(12, 1, deadline_h=24.42, price_scale=0.001, egress=thousandths)
    optimum, lines = _search(cheap, "cost", step_s=0.25)
    assert 0 < optimum < 1 and lines and all(_line("usd").fullmatch(line) for line in lines), lines


def _figure(text: str) -> float:
    return float(text.replace(",", ""))


def _lp(model: MilpModel, solver: str) -> highspy.Highs:
    """The program's LP relaxation with presolve off, so that HiGHS's own LP solver does all the work."""
    h: highspy.Highs = _quiet_highs()
    lp = model._highs_lp(model.cost_objective())
    lp.integrality_ = []
    h.passModel(lp)
    h.setOptionValue("solver", solver)
    h.setOptionValue("presolve", "off")
    return h


@pytest.mark.parametrize("solver", ["simplex", "ipm"])
def test_the_deadline_stops_highs_inside_an_lp_where_no_search_callback_runs(solver: str) -> None:
    # A branch and bound begins with LPs (the root, an analytic centre) that call only the LP
    # callbacks; a large one can outlast the whole budget there.
    model = _model(12, 1)
    free = _lp(model, solver)
    free.run()
    assert free.getModelStatus() == highspy.HighsModelStatus.kOptimal
    iterations = {"simplex": "simplex_iteration_count", "ipm": "ipm_iteration_count"}[solver]
    needed = getattr(free.getInfo(), iterations)
    assert needed > 5

    watched = _lp(model, solver)
    _watch(watched, Budget(None, clock=_stepping_clock(1.0)), time_limit_s=3.0, in_usd=True)
    watched.run()
    assert watched.getModelStatus() == highspy.HighsModelStatus.kInterrupt
    assert getattr(watched.getInfo(), iterations) < needed

    unlimited = _lp(model, solver)
    _watch(unlimited, Budget(None, clock=_stepping_clock(1.0)), time_limit_s=None, in_usd=True)
    unlimited.run()
    assert unlimited.getModelStatus() == highspy.HighsModelStatus.kOptimal
    assert getattr(unlimited.getInfo(), iterations) == needed


def _earliest_stop(p: Any, cat: Any, egress: Any = EGRESS, **policy: Any) -> tuple[list[str], Plan]:
    """A time limit, counted in clock steps, at which planning returns a plan where one step less
    returns none (found by bisection): the errors met on the way, and that plan. The steps are 10 s
    each, so that HiGHS's own timer (real seconds) never stops it first: only the budget's clock does."""

    def plan(steps: int) -> Plan | str:
        try:
            return plan_pipeline(p, cat, egress, Policy(all_clouds=True, time_limit_s=10.0 * steps, **policy),
                                 baseline=False, clock=_stepping_clock(10.0))
        except PlanningError as error:
            return str(error)

    low, high = 1, 64
    first, found = plan(low), plan(high)
    assert isinstance(first, str) and isinstance(found, Plan)
    errors = [first]
    while high - low > 1:
        middle = (low + high) // 2
        outcome = plan(middle)
        if isinstance(outcome, Plan):
            high, found = middle, outcome
        else:
            low = middle
            errors.append(outcome)
    return errors, found


@pytest.mark.parametrize("price_scale", [1.0, 0.001])  # the second plan costs under a dollar
def test_a_search_stopped_by_the_clock_returns_its_plan_with_proven_bounds(price_scale: float) -> None:
    p, cat = _large_case(12, seed=1, price_scale=price_scale)
    egress = rules(*[(source, dest, rate * price_scale) for source, dest, rate in EGRESS_RATES])
    exact = plan_pipeline(p, cat, egress, Policy(all_clouds=True, deadline_h=24.42, time_limit_s=0), baseline=False)
    errors, quick = _earliest_stop(p, cat, egress=egress, deadline_h=24.42)
    assert all(re.fullmatch(r"the solver stopped before finding the cheapest plan \(time limit [\d.]+ s; "
                            r"raise --time-limit, 0 for none\)", error) for error in errors), errors
    assert quick.gap > 0 and quick.lower_bound_usd is not None and quick.lower_bound_hours is None
    assert quick.lower_bound_usd <= exact.total_usd + 1e-9 <= quick.total_usd + 2e-9
    assert quick.gap == pytest.approx((quick.total_usd - quick.lower_bound_usd) / quick.total_usd)
    assert quick.total_hours <= 24.42


def test_a_fastest_plan_stopped_by_the_clock_keeps_its_proven_time_bound() -> None:
    # Under the time objective the search first finds the fastest plan, then the cheapest at that time:
    # stopped early, the plan keeps both bounds and the larger gap.
    p, cat = _large_case(12, seed=1)
    exact = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective="time", max_cost_usd=140.0,
                                                 time_limit_s=0), baseline=False)
    errors, quick = _earliest_stop(p, cat, objective="time", max_cost_usd=140.0)
    assert errors and all(error.startswith("the solver stopped before finding the fastest plan (time limit ")
                          for error in errors), errors
    assert quick.lower_bound_hours is not None and quick.lower_bound_usd is not None and quick.solver == "milp"
    assert quick.lower_bound_hours <= exact.total_hours + 1e-9 <= quick.total_hours + 2e-9
    assert quick.lower_bound_hours < quick.total_hours and quick.total_usd <= 140.0
    hours_gap = (quick.total_hours - quick.lower_bound_hours) / quick.total_hours
    usd_gap = (quick.total_usd - quick.lower_bound_usd) / quick.total_usd
    assert quick.gap == pytest.approx(max(hours_gap, usd_gap))


@pytest.mark.parametrize("lone", [False, True])  # with a last part proven at once, after one stopped early
def test_a_plan_of_independent_parts_stopped_by_the_clock_sums_their_bounds(lone: bool) -> None:
    p, cat = _large_case(12, seed=1, parts=2, lone=lone)
    policy = Policy(all_clouds=True)
    problem, _ = _problem(p, cat, EGRESS, policy)
    assert [len(part) for part in independent_parts(problem)] == [12, 12] + [1] * lone
    floor = sum(min(o.compute_usd for o in options) for options in problem.options)  # no egress, cheapest each
    heard: list[str] = []
    exact = plan_pipeline(p, cat, EGRESS, dataclasses.replace(policy, time_limit_s=0), baseline=False,
                          progress=heard.append)
    assert any(line.endswith(f" s: planning {2 + lone} independent parts") for line in heard), heard
    stopped = []
    for steps in range(1, 160, 2):  # a program is built only with 3x the start's search left: ~65 steps
        plan = plan_pipeline(p, cat, EGRESS, dataclasses.replace(policy, time_limit_s=10.0 * steps), baseline=False,
                             clock=_stepping_clock(10.0))
        if plan.gap == 0:
            assert plan.total_usd == pytest.approx(exact.total_usd) and plan.lower_bound_usd is None
            break
        stopped.append(plan)
        assert plan.lower_bound_usd is not None
        assert floor - 1e-9 <= plan.lower_bound_usd <= exact.total_usd + 1e-9 <= plan.total_usd + 2e-9
        assert plan.gap == pytest.approx((plan.total_usd - plan.lower_bound_usd) / plan.total_usd)
    else:
        raise AssertionError("not proven within 160 clock steps")
    assert len(stopped) >= 3


def test_an_explanation_whose_searches_stop_early_brackets_each_figure() -> None:
    # Each within its deadline or budget alone, never both: the error explains with four searches,
    # each of which a short enough budget stops before its proof ("at most X (at least Y)").
    p, cat = _large_case(12, seed=1)
    exact = {
        "fastest": plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective="time", time_limit_s=0),
                                 baseline=False).total_hours,
        "cheapest": plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, time_limit_s=0), baseline=False).total_usd}
    deadline_h, budget_usd = 24.42, exact["cheapest"] + 1
    exact["in time"] = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, deadline_h=deadline_h, time_limit_s=0),
                                     baseline=False).total_usd
    exact["in budget"] = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective="time",
                                                              max_cost_usd=budget_usd, time_limit_s=0),
                                       baseline=False).total_hours
    figure = r"\$?([\d,]+\.\d\d)(?: h)?"
    forms = {"fastest": rf"[:;] the fastest plan takes at most {figure} \(at least {figure}\)",
             "cheapest": rf"[:;] the cheapest plan costs at most {figure} \(at least {figure}\)",
             "in time": rf"within the deadline the cheapest plan costs at most {figure} \(at least {figure}\)",
             "in budget": rf"within the budget the fastest plan takes at most {figure} \(at least {figure}\)"}
    policy = Policy(all_clouds=True, deadline_h=deadline_h, max_cost_usd=budget_usd)
    with pytest.raises(PlanningError) as proven:
        plan_pipeline(p, cat, EGRESS, dataclasses.replace(policy, time_limit_s=0), baseline=False)
    assert "(at least" not in str(proven.value)
    seen: set[str] = set()
    for steps in range(2, 90, 3):
        with pytest.raises(PlanningError) as caught:
            plan_pipeline(p, cat, EGRESS, dataclasses.replace(policy, time_limit_s=10.0 * steps), baseline=False,
                          clock=_stepping_clock(10.0))
        message = str(caught.value)
        if message == str(proven.value):
            break
        assert message.startswith(f"no plan meets the constraints: no plan meets both the deadline of {deadline_h:g} h "
                                  f"and the budget of ${budget_usd:,.2f}: ")
        for name, form in forms.items():
            for most, least in re.findall(form, message):
                assert _figure(least) <= round(exact[name], 2) <= _figure(most), (name, message)
                assert _figure(least) < _figure(most), (name, message)  # a figure not proven has a gap
                seen.add(name)
    else:
        raise AssertionError("the explanation was not proven within 90 clock steps")
    assert seen == set(forms)


def test_a_fastest_plan_stopped_at_once_is_bounded_by_the_longest_chain_of_estimates() -> None:
    # With no deadline or budget the search starts from a quick plan; stopped before HiGHS proves
    # anything, the bound is the floor no plan beats: the DAG's longest path of stage hours.
    p, cat = _large_case(12, seed=1)
    finish: dict[str, float] = {}
    for name in p.order:  # every stage's hours here are its estimate, on any machine
        hours = p.stages[name].estimate.hours["default"]
        finish[name] = hours + max((finish[up] for up in p.upstream(name)), default=0.0)
    longest = max(finish.values())
    quick = plan_pipeline(p, cat, EGRESS, Policy(all_clouds=True, objective="time", time_limit_s=10.0), baseline=False,
                          clock=_stepping_clock(10.0))
    assert quick.gap > 0 and quick.lower_bound_hours == pytest.approx(longest)
    assert quick.total_hours > longest
