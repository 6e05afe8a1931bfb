"""HiGHS searched in a forked child: the same plans as in-process, and ended at its deadline whatever
step it is in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from test_child_search_outcomes import keep_every_placement
from test_time_limit import EGRESS, _large_case

from skyflow.planner import Policy, plan_pipeline
from skyflow.planner import milp as milp_module
from skyflow.planner.core import _problem
from skyflow.planner.highs_child import _child, _Messages, run_in_child
from skyflow.planner.milp import MilpModel, _quiet_highs
from tests.processes_seen import process_state, wait_for


@pytest.fixture(autouse=True)
def never_hang() -> Iterator[None]:
    """A deadline that is not kept fails the test instead of stalling the suite."""
    def fail(*_: object) -> None:
        raise AssertionError("the search was not ended at its deadline")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def knapsack(values: list[float], weights: list[float], capacity: float) -> Any:
    """max values.x s.t. weights.x <= capacity, x binary: minimised as -values.x."""
    import highspy

    h = _quiet_highs()
    lp = highspy.HighsLp()
    n = len(values)
    lp.num_col_, lp.num_row_ = n, 1
    lp.col_cost_ = np.array([-v for v in values])
    lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
    lp.row_lower_, lp.row_upper_ = np.array([-np.inf]), np.array([capacity])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(n + 1, dtype=np.int32)
    lp.a_matrix_.index_ = np.zeros(n, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(weights, dtype=float)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    h.passModel(lp)
    return h


def test_a_search_that_ends_in_time_comes_back_whole_and_optimal() -> None:
    h = knapsack([10, 13, 7, 8, 2], [5, 6, 4, 3, 1], capacity=10)
    outcome = run_in_child(h, time.monotonic() + 60, time.monotonic)
    assert outcome.finished and outcome.status == "kOptimal" and outcome.error is None
    assert outcome.x is not None and list(np.round(outcome.x)) == [0, 1, 0, 1, 1]  # 13 + 8 + 2 in 6 + 3 + 1
    assert outcome.objective == pytest.approx(-23) and outcome.bound == pytest.approx(-23)


class _StuckSolver:
    """A solver whose run() never returns and checks no interrupt: HiGHS inside a long presolve."""

    class _Callback:
        def subscribe(self, _: object) -> None:
            pass

    cbMipImprovingSolution = _Callback()
    cbMipInterrupt = _Callback()

    def run(self) -> None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the child inherits the test's alarm
        while True:
            time.sleep(1)


def test_a_search_stuck_in_a_step_is_ended_at_the_deadline_and_leaves_no_process() -> None:
    outcome = run_in_child(_StuckSolver(), time.monotonic() + 0.5, time.monotonic)
    assert not outcome.finished and outcome.x is None and outcome.bound == -np.inf
    assert outcome.error is None  # ended at the deadline, not failed
    assert outcome.pid > 0  # (waitpid of 0 would ask about any child of this process group)
    with pytest.raises(ChildProcessError):  # the child was killed and reaped: it is no child of ours now
        os.waitpid(outcome.pid, os.WNOHANG)


@pytest.mark.parametrize(("death", "told"), [(lambda: os._exit(3), "exit code 3"),
                                             (lambda: os.kill(os.getpid(), signal.SIGTERM), "signal SIGTERM")])
def test_a_child_that_dies_is_an_error_not_a_plan(death: Any, told: str) -> None:
    class Dying(_StuckSolver):
        def run(self) -> None:
            death()

    outcome = run_in_child(Dying(), time.monotonic() + 60, time.monotonic)
    assert not outcome.finished and outcome.x is None
    assert outcome.error == f"the solver's process ended with {told}"


def test_the_plans_a_child_finds_before_it_dies_come_back_with_the_error() -> None:
    # HiGHS hands each better solution to a callback as it finds it; what the child had sent before it
    # died (or was killed at the deadline) is the plan to return.
    plans = [(30.0, [1.0, 0.0, 1.0]), (20.0, [0.0, 1.0, 1.0]), (25.0, [1.0, 1.0, 0.0])]

    class Improving(_StuckSolver):
        class _Subscriber(_StuckSolver._Callback):
            def __init__(self) -> None:
                self.callbacks: list[Any] = []

            def subscribe(self, callback: Any) -> None:
                self.callbacks.append(callback)

        cbMipImprovingSolution: _Subscriber

        def __init__(self) -> None:
            self.cbMipImprovingSolution = self._Subscriber()

        def run(self) -> None:
            for objective, values in plans:
                out = type("DataOut", (), {"objective_function_value": objective, "mip_solution": values})
                for callback in self.cbMipImprovingSolution.callbacks:
                    callback(type("Event", (), {"data_out": out}))
            os._exit(9)

    outcome = run_in_child(Improving(), time.monotonic() + 60, time.monotonic)
    assert not outcome.finished and outcome.error == "the solver's process ended with exit code 9"
    assert outcome.objective == 20.0 and outcome.x is not None and list(outcome.x) == [0.0, 1.0, 1.0]


def test_a_search_that_raises_is_an_error_naming_the_exception() -> None:
    class Raising(_StuckSolver):
        def run(self) -> None:
            raise ValueError("bad model")

    outcome = run_in_child(Raising(), time.monotonic() + 60, time.monotonic)
    assert (outcome.finished, outcome.x, outcome.error) == (False, None, "ValueError: bad model")


class _Raising(_StuckSolver):
    def run(self) -> None:
        raise ValueError("bad model")


@pytest.mark.parametrize(("solver", "code", "last"), [
    (lambda: knapsack([10, 13, 7, 8, 2], [5, 6, 4, 3, 1], capacity=10), 0, "done"),
    (_Raising, 1, "error")])
def test_the_search_child_ends_its_process_with_its_own_code(solver: Any, code: int, last: str) -> None:
    prepared = solver()
    # As run_in_child does: an earlier test's solve left HiGHS's worker threads in this process, which
    # a forked child would wait on (its search hung until the test's alarm when one had run before).
    reset = getattr(type(prepared), "resetGlobalScheduler", None)
    if reset is not None:
        reset(True)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # stands in for run_in_child's child; whatever escapes _child must not run on
        try:
            _child(prepared, write_fd)
        finally:
            os._exit(99)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    messages = _Messages(read_fd).read()
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == code
    assert messages and messages[-1][0] == last
    if last == "error":
        assert messages == [("error", "ValueError: bad model")]


@pytest.mark.parametrize("objective", ["cost", "time"])
def test_plans_searched_in_a_child_equal_the_in_process_ones(objective: Literal["cost", "time"],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    keep_every_placement(monkeypatch)  # a search to run: without it the start is proven optimal at once
    p, cat = _large_case(40, seed=11)
    policy = Policy(all_clouds=True, objective=objective, time_limit_s=60)
    in_process = plan_pipeline(p, cat, EGRESS, policy, baseline=False)
    monkeypatch.setattr(milp_module, "CHILD_FROM_NONZEROS", 0)
    forked: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    in_child = plan_pipeline(p, cat, EGRESS, policy, baseline=False)
    assert forked, "the search ran in a child"
    assert in_child.gap == in_process.gap == 0
    assert in_child.total_usd == pytest.approx(in_process.total_usd)
    assert in_child.total_hours == pytest.approx(in_process.total_hours)


def _search_in_child_with(option: str, value: Any) -> Any:
    """The 12-stage case's cost program searched in a child, with one HiGHS option set."""
    p, cat = _large_case(12, seed=1)
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    model = MilpModel(problem, [np.arange(len(o)) for o in problem.options], with_time=True)
    h = _quiet_highs()
    h.passModel(model._highs_lp(model.cost_objective()))
    h.setOptionValue(option, value)
    return run_in_child(h, time.monotonic() + 60, time.monotonic)


def test_a_search_that_stops_before_any_plan_hands_back_none() -> None:
    # HiGHS's own time limit of 0 ends the search at once: it finishes, without a solution, and what
    # it holds for one (zeros) must not be taken for a plan.
    outcome = _search_in_child_with(option="time_limit", value=0.0)
    assert outcome.finished and outcome.status == "kTimeLimit" and outcome.error is None
    assert outcome.x is None


def test_a_search_highs_ends_before_its_proof_keeps_the_bound_below_its_plan() -> None:
    # HiGHS stops itself (here at its first plan) with a plan it has not proven: the bound handed back is
    # its dual bound, not the plan's own figure, which would claim the plan proven.
    outcome = _search_in_child_with(option="mip_max_improving_sols", value=1)
    assert outcome.finished and outcome.status == "kSolutionLimit" and outcome.x is not None
    assert outcome.objective is not None and np.isfinite(outcome.bound)
    assert outcome.bound < outcome.objective - 1e-6


_KILLED_PLANNER = """
import signal, sys, time
sys.path.insert(0, sys.argv[1])
from test_highs_child import _StuckSolver
from skyflow.planner.highs_child import run_in_child
signal.signal(signal.SIGALRM, signal.SIG_DFL)
run_in_child(_StuckSolver(), time.monotonic() + 3600, time.monotonic)  # a search with an hour to go
"""


def test_a_planner_killed_outright_takes_its_search_child_with_it() -> None:
    planner = subprocess.Popen([sys.executable, "-c", _KILLED_PLANNER, str(Path(__file__).parent)])
    search: list[int] = []
    try:
        search = wait_for(lambda: _children(planner.pid), "the search child to start")
        os.kill(planner.pid, signal.SIGKILL)  # no `finally` runs: only the kernel can end the child now
        planner.wait()
        wait_for(lambda: process_state(search[0]) in ("", "Z"), "the search child to end")
    finally:
        planner.kill()
        for pid in search:  # where the test failed: leave no search behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (field 4 of /proc/PID/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found
