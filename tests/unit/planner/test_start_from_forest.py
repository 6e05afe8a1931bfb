"""The start of a plain cost search: single-stage moves from the forest relaxation's optimum, and the whole
local search ("polish") wherever that start would reach HiGHS or come back as it is, unless the LP
relaxation's guided search stands in for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_time_limit import EGRESS, _large_case

from skyflow.planner import Policy
from skyflow.planner import milp as milp_module
from skyflow.planner import solve as solve_module
from skyflow.planner.budget import Budget
from skyflow.planner.core import _problem
from skyflow.planner.forest import forest_marginals
from skyflow.planner.milp import MilpModel
from skyflow.planner.problem import Problem, evaluate
from skyflow.planner.search import LocalSearch, descent_from, good_start, positions_of
from skyflow.planner.solve import cheapest_per_location, solve_milp_bounded


def _case(n: int = 40, seed: int = 3) -> tuple[Problem, list[np.ndarray], Any, list[int]]:
    p, cat = _large_case(n, seed=seed)
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    keep = cheapest_per_location(problem)
    forest = forest_marginals(problem, keep)
    return problem, keep, forest, descent_from(problem, keep, [int(np.argmin(m)) for m in forest[1]])


class _Polisher:
    """The whole local search, remembering what it was given."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.calls: list[tuple[list[int], int]] = []
        self.results: list[list[int]] = []

    def __call__(self, plan: list[int], options: list[np.ndarray]) -> list[int]:
        self.calls.append((list(plan), sum(len(o) for o in options)))
        self.results.append(good_start(self.problem, options, positions_of(plan, options)))
        return self.results[-1]


def test_the_descent_ends_where_no_single_stage_move_helps_and_positions_round_trip() -> None:
    problem, keep, _, start = _case()
    positions = positions_of(start, keep)
    assert [int(keep[s][k]) for s, k in enumerate(positions)] == start
    search = LocalSearch(problem, keep)
    for s, k in enumerate(positions):
        search.move(s, k)
    assert all(search.delta(s).min() >= -1e-9 for s in range(len(keep)))


def test_a_start_left_without_a_program_is_polished_and_keeps_the_forest_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, forest, start = _case()
    monkeypatch.setattr(solve_module, "_BUILD_OVER_SEARCH", 1e9)  # no time to build, whatever is left
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0), search_s=1.0, forest=forest,
                               polish=polish)
    assert [plan for plan, _ in polish.calls] == [start]
    assert found.choice == polish.results[0]
    assert evaluate(problem, found.choice).total_usd <= evaluate(problem, start).total_usd
    assert found.cost_bound == pytest.approx(forest[0])


def test_without_a_time_limit_highs_starts_from_the_polished_start(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, forest, start = _case()
    given: list[list[int] | None] = []
    real_solve: Callable[..., np.ndarray] = MilpModel.solve

    def solve(self: MilpModel, *args: Any, start: list[int] | None = None, **kwargs: Any) -> Any:
        given.append(start)
        return real_solve(self, *args, start=start, **kwargs)

    monkeypatch.setattr(MilpModel, "solve", solve)
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(None), forest=forest, polish=polish)
    assert len(polish.calls) == 1 and given == [polish.results[0]]
    assert found.cost_bound is None


def _guided_case(monkeypatch: pytest.MonkeyPatch) -> tuple[Problem, list[np.ndarray], Any, list[int]]:
    monkeypatch.setattr(solve_module, "_GUIDED_FROM_STAGES", 1)
    monkeypatch.setattr(solve_module, "_FIXING_SLACK", np.inf)  # keep every placement for the program
    return _case()


def test_the_lp_guided_search_stands_in_for_polishing(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, forest, start = _guided_case(monkeypatch)
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0), forest=forest, polish=polish)
    assert polish.calls == []
    assert found.cost_bound is None


def test_a_start_the_lp_could_not_guide_is_polished(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, forest, start = _guided_case(monkeypatch)
    monkeypatch.setattr(MilpModel, "relaxation", lambda self, objective, time_limit_s, clock=None: None)
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0), forest=forest, polish=polish)
    assert [plan for plan, _ in polish.calls] == [start]
    assert found.cost_bound is None  # HiGHS still proves the optimum from there


def test_a_program_whose_build_ran_out_of_time_gives_the_polished_start(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, keep, forest, start = _case()

    class OutOfTimeWhileBuilding(MilpModel):
        def __init__(self, *args: Any, stop: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, stop=lambda: True, **kwargs)

    monkeypatch.setattr(milp_module, "MilpModel", OutOfTimeWhileBuilding)
    monkeypatch.setattr(solve_module, "_GUIDED_FROM_STAGES", 1)  # the LP path: no polish before building
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(60.0), forest=forest, polish=polish)
    assert [plan for plan, _ in polish.calls] == [start]
    assert found.choice == polish.results[0] and found.cost_bound == pytest.approx(forest[0])


def test_a_program_whose_lp_would_not_finish_gives_the_polished_start_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The LP relaxation's time is estimated from the program's nonzeros and how long the start took per
    placement; beyond its share of what is left, neither it nor HiGHS runs."""
    problem, keep, forest, start = _guided_case(monkeypatch)
    solved: list[int] = []
    real = MilpModel.relaxation

    def relaxation(self: MilpModel, *args: Any, **kwargs: Any) -> Any:
        solved.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MilpModel, "relaxation", relaxation)
    built: list[MilpModel] = []

    class Recording(MilpModel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(milp_module, "MilpModel", Recording)
    heard: list[str] = []
    model = MilpModel(problem, keep, with_time=False)
    per_placement = 0.01 / sum(len(k) for k in keep)  # the start took 0.01 s
    # an estimate of 20 s against 40 % of a 30 s budget: out of reach, and seen to be so part-way through
    # building the program (past 60 % of its nonzeros), which then ends there
    monkeypatch.setattr(solve_module, "_LP_PER_NONZERO", 20.0 / (model.nonzeros() * per_placement))
    polish = _Polisher(problem)
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(30.0, progress=heard.append),
                               search_s=0.01, forest=forest, polish=polish)
    assert solved == [] and [plan for plan, _ in polish.calls] == [start]
    assert found.choice == polish.results[0] and found.cost_bound == pytest.approx(forest[0])
    part = built[0]
    assert not part.complete and part.outgrown == part.nonzeros()
    assert 0.6 * model.nonzeros() < part.outgrown < model.nonzeros()
    assert any(f"no time for the LP relaxation of over {part.outgrown:,} nonzeros" in line for line in heard)
    # an estimate of 10 s against 12 s: the LP runs, and HiGHS proves the optimum
    monkeypatch.setattr(solve_module, "_LP_PER_NONZERO", 10.0 / (model.nonzeros() * per_placement))
    found = solve_milp_bounded(problem, keep, start=start, budget=Budget(30.0), search_s=0.01, forest=forest,
                               polish=_Polisher(problem))
    assert solved == [1] and found.cost_bound is None
