"""What the integer program hands back when its search is stopped (time limit, budget, child process) and
what the LP relaxation gives: the start plan or an error naming the limit, never a plan that was not found."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from tables import catalog, offer, pipeline, rules
from test_time_limit import EGRESS, _large_case

from skyflow.errors import PlanningError
from skyflow.planner import Policy
from skyflow.planner import milp as milp_module
from skyflow.planner import solve as solve_module
from skyflow.planner.budget import MIN_STEP_S, Budget
from skyflow.planner.core import _problem
from skyflow.planner.milp import InfeasibleError, MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import good_start
from skyflow.planner.solve import _compute_floor, cheapest_per_location, solve_milp_bounded


class LeapingClock:
    """A clock that moves ``step`` seconds each time it is read: every deadline is already past."""

    def __init__(self, step: float = 1000.0) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _large() -> tuple[Problem, list[np.ndarray]]:
    p, cat = _large_case(40, seed=4)
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    return problem, cheapest_per_location(problem)


def _small() -> tuple[Problem, list[np.ndarray]]:
    """Three stages in a chain over two clouds, with egress that makes the placement a real choice."""
    cat = catalog(offer("aws/r1", "m", 1.0), offer("aws/r2", "m2", 1.5), offer("gcp/r1", "n", 0.5))
    p = pipeline({"a": {"estimate": 2, "outputs": {"o": 40}},
                  "b": {"estimate": 1, "inputs": {"x": "a.o"}, "outputs": {"o": 40}},
                  "c": {"estimate": 3, "inputs": {"x": "b.o"}}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r1", "size_gb": 100}})
    problem, _ = _problem(p, cat, rules(("aws", "*", 0.09), ("gcp", "*", 0.12)), Policy(all_clouds=True))
    return problem, cheapest_per_location(problem)


def _brute_force_usd(problem: Problem, keep: list[np.ndarray]) -> float:
    return min(evaluate(problem, list(c)).total_usd for c in itertools.product(*[k.tolist() for k in keep]))


def test_a_search_stopped_at_once_without_a_start_names_the_time_limit() -> None:
    problem, keep = _large()
    model = MilpModel(problem, keep, with_time=False)
    with pytest.raises(PlanningError, match=r"^the solver stopped before finding the cheapest plan "
                                            r"\(time limit 0 s; raise --time-limit, 0 for none\)$"):
        model.solve(model.cost_objective(), "the cheapest plan", time_limit_s=0.0)


def test_a_search_stopped_before_it_took_the_start_returns_the_start_unproven() -> None:
    # With time rows the start's finish times are an LP HiGHS must solve before it holds the start; at a
    # zero time limit it stops first (without them it completes the start at once and returns it as found).
    problem, keep = _large()
    model = MilpModel(problem, keep, with_time=True)
    start = good_start(problem, keep)
    x = model.solve(model.cost_objective(), "the cheapest plan", start=start, time_limit_s=0.0)
    assert model.choice(x) == start
    assert model.bound == -np.inf  # nothing was proven
    assert x[np.concatenate(model.x)].sum() == len(keep)  # one placement per stage, the rest left at 0


def test_the_budgets_clock_interrupts_the_search_and_says_so() -> None:
    problem, keep = _large()
    model = MilpModel(problem, keep, with_time=False)
    with pytest.raises(PlanningError, match=r"^the solver stopped before finding the cheapest plan "
                                            rf"\(time limit {MIN_STEP_S:g} s; raise --time-limit, 0 for none\)$"):
        model.solve(model.cost_objective(), "the cheapest plan", budget=Budget(10.0, clock=LeapingClock()))
    start = good_start(problem, keep)
    x = model.solve(model.cost_objective(), "the cheapest plan", start=start, budget=Budget(10.0, clock=LeapingClock()))
    assert model.choice(x) == start


def test_a_child_search_ended_at_its_deadline_returns_the_start_or_names_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milp_module, "CHILD_FROM_NONZEROS", 0)
    problem, keep = _small()
    model = MilpModel(problem, keep, with_time=False)
    with pytest.raises(PlanningError, match=r"^the solver stopped before finding the cheapest plan "
                                            rf"\(time limit {MIN_STEP_S:g} s; raise --time-limit, 0 for none\)$"):
        model.solve(model.cost_objective(), "the cheapest plan", budget=Budget(10.0, clock=LeapingClock()))
    start = [int(k[-1]) for k in keep]
    x = model.solve(model.cost_objective(), "the cheapest plan", start=start, budget=Budget(10.0, clock=LeapingClock()))
    assert model.choice(x) == start
    assert model.bound == -np.inf


def test_a_child_search_that_proves_no_plan_fits_is_infeasible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milp_module, "CHILD_FROM_NONZEROS", 0)
    problem, keep = _small()
    floor = _compute_floor(problem, keep)
    with pytest.raises(InfeasibleError, match=r"^no plan meets the constraints \(deadline, budget\) while finding "
                                              r"the cheapest plan$"):
        solve_milp_bounded(problem, keep, max_cost_usd=floor / 2, budget=Budget(30.0))


def test_a_child_search_that_ends_in_time_is_optimal_with_no_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milp_module, "CHILD_FROM_NONZEROS", 0)
    problem, keep = _small()
    found = solve_milp_bounded(problem, keep, budget=Budget(30.0))
    assert evaluate(problem, found.choice).total_usd == pytest.approx(_brute_force_usd(problem, keep))
    assert found.cost_bound is None


def test_the_lp_relaxation_bounds_the_optimum_and_a_zero_time_limit_gives_none() -> None:
    problem, keep = _small()
    model = MilpModel(problem, keep, with_time=False)
    relaxed = model.relaxation(model.cost_objective(), None)
    assert relaxed is not None
    x, value = relaxed.x, relaxed.value
    optimum = _brute_force_usd(problem, keep)
    assert _compute_floor(problem, keep) - 1e-9 <= value <= optimum + 1e-9
    assert len(model.rounded(x)) == len(keep)
    assert all(0 <= k < len(opts) for k, opts in zip(model.rounded(x), keep, strict=True))
    big, big_keep = _large()
    big_model = MilpModel(big, big_keep, with_time=False)
    assert big_model.relaxation(big_model.cost_objective(), 0.0) is None


def test_the_lp_relaxation_counts_handing_the_program_over_in_its_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Converting a large program for HiGHS took 0.8 s of a 5,000-stage plan, on top of the LP's own limit:
    given the clock, the limit counts from the call."""
    problem, keep = _small()
    model = MilpModel(problem, keep, with_time=False)
    now = [0.0]
    convert = MilpModel._highs_lp

    def slow_convert(self: MilpModel, objective: np.ndarray) -> Any:
        now[0] += 6.0  # the conversion "takes" 6 s of a 5 s limit
        return convert(self, objective)

    monkeypatch.setattr(MilpModel, "_highs_lp", slow_convert)
    assert model.relaxation(model.cost_objective(), 5.0, lambda: now[0]) is None
    assert model.relaxation(model.cost_objective(), 7.0, lambda: now[0]) is not None
    assert model.relaxation(model.cost_objective(), 5.0) is not None  # no clock: the limit is HiGHS's own


def test_the_rounded_relaxation_of_lone_stages_is_their_cheapest_option() -> None:
    cat = catalog(offer("aws/r", "m", 3.0), offer("gcp/r", "n", 1.0), offer("azure/r", "d", 2.0))
    problem, _ = _problem(pipeline({"a": {"estimate": 2}, "b": {"estimate": 1}}), cat, rules(), Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    model = MilpModel(problem, keep, with_time=False)
    relaxed = model.relaxation(model.cost_objective(), None)
    assert relaxed is not None
    x, value = relaxed.x, relaxed.value
    cheapest = [int(np.argmin(problem.opt_compute[s][k])) for s, k in enumerate(keep)]
    assert model.rounded(x) == cheapest
    assert value == pytest.approx(2.0 + 1.0)


def _guided(monkeypatch: pytest.MonkeyPatch, over_lp: float) -> tuple[Problem, list[np.ndarray], Any, list[int]]:
    monkeypatch.setattr(solve_module, "_GUIDED_FROM_STAGES", 1)
    monkeypatch.setattr(solve_module, "_MILP_OVER_LP", over_lp)
    problem, keep = _small()
    dearest = [int(k[np.argmax(problem.opt_compute[s][k])]) for s, k in enumerate(keep)]
    heard: list[str] = []
    clock = LeapingClock(1e-3)
    clock.now = 1e6  # a clock far from 0, as time.monotonic() is: only differences of its readings mean anything
    budget = Budget(60.0, clock=clock, progress=heard.append)
    found = solve_milp_bounded(problem, keep, start=dearest, budget=budget)
    return problem, keep, (found, heard), dearest


def test_with_no_time_left_after_the_lp_the_guided_start_and_the_lp_bound_are_the_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The reduced costs would prove this start optimal at once (test_reduced_cost_fixing): here they drop nothing.
    monkeypatch.setattr(MilpModel, "surviving", lambda self, relaxed, incumbent: [k.copy() for k in self.keep])
    problem, keep, (found, heard), dearest = _guided(monkeypatch, over_lp=1e12)
    optimum = _brute_force_usd(problem, keep)
    cost = evaluate(problem, found.choice).total_usd
    assert cost < evaluate(problem, dearest).total_usd  # the rounding of the LP gave a better start
    assert cost == pytest.approx(optimum)
    model = MilpModel(problem, keep, with_time=False)
    relaxed = model.relaxation(model.cost_objective(), None)
    assert relaxed is not None
    assert relaxed.value == pytest.approx(optimum)  # here the LP bound reaches the start's cost: it is proven
    assert found.cost_bound is None
    assert any(h.endswith("solving the LP relaxation for a bound and a second start") for h in heard)
    assert any(h.endswith("no time left for the integer program; keeping the best start and the LP bound")
               for h in heard)


@pytest.mark.parametrize("over_lp", [0.0, solve_module._MILP_OVER_LP])  # the LP took ms of a 60 s budget
def test_with_time_left_after_the_lp_the_integer_program_still_proves_the_optimum(
        monkeypatch: pytest.MonkeyPatch, over_lp: float) -> None:
    problem, keep, (found, heard), _ = _guided(monkeypatch, over_lp=over_lp)
    assert evaluate(problem, found.choice).total_usd == pytest.approx(_brute_force_usd(problem, keep))
    assert found.cost_bound is None
    assert any("LP bound $" in h for h in heard)
    assert not any("no time left" in h for h in heard)


def test_without_an_lp_answer_the_given_start_and_the_compute_floor_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MilpModel, "relaxation", lambda self, objective, time_limit_s, clock=None: None)
    problem, keep, (found, heard), dearest = _guided(monkeypatch, over_lp=1e12)
    assert found.choice == dearest
    floor = _compute_floor(problem, keep)
    assert found.cost_bound == pytest.approx(floor)
    assert not any("searching from its rounding" in h for h in heard)


def test_the_cost_search_keeps_back_time_for_what_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeing a large program and assembling its plan take time after the search: the search's limit is the
    budget's search time less what the caller keeps back, and never under the floor."""
    problem, keep = _small()
    model = MilpModel(problem, keep, with_time=False)
    limits: list[float] = []
    real = milp_module._set_option

    def recording(h: Any, name: str, value: Any) -> None:
        if name == "time_limit":
            limits.append(value)
        real(h, name, value)

    monkeypatch.setattr(milp_module, "_set_option", recording)
    budget = Budget(10.0, clock=lambda: 100.0, started=96.0)  # 6 s left, 5.5 s before the reserve
    model.solve(model.cost_objective(), "the cheapest plan", budget=budget, keep_back_s=2.0)
    model.solve(model.cost_objective(), "the cheapest plan", budget=budget, keep_back_s=9.0, floor_s=0.5)
    assert limits == [pytest.approx(3.5), pytest.approx(0.5)]
