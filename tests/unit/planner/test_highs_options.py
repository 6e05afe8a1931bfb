"""HiGHS takes every option the planner sets, or planning stops with an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.errors import PlanningError
from skyflow.planner.milp import _quiet_highs, _set_option


def test_an_option_highs_rejects_is_an_error() -> None:
    # HiGHS answers a misspelt option or a bad value with a status; left unchecked, a search meant to be
    # exact would run at HiGHS's default 1e-4 relative gap.
    h = _quiet_highs()
    with pytest.raises(PlanningError, match=r"^HiGHS rejected its option mip_rel_gp = 0\.0$"):
        _set_option(h, "mip_rel_gp", 0.0)
    with pytest.raises(PlanningError, match=r"^HiGHS rejected its option time_limit = None$"):
        _set_option(h, "time_limit", None)  # type: ignore[arg-type]
    _set_option(h, "mip_rel_gap", 0.0)


def test_the_solver_writes_nothing_to_the_terminal() -> None:
    # HiGHS writes a banner to file descriptor 1 the first time a process creates a solver, and a log as
    # it solves; either would corrupt `skyflow plan --json`, and so would standard output not put back
    # where it was. A fresh process, so the banner is its first.
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tables import catalog, offer, pipeline, rules
from skyflow.planner import Policy
from skyflow.planner.core import _problem
from skyflow.planner.solve import cheapest_per_location, solve_milp
p = pipeline({{"s0": {{"outputs": {{"o": 10}}, "estimate": 1}}, "s1": {{"inputs": {{"i": "s0.o"}}, "estimate": 1}}}})
problem, _ = _problem(p, catalog(offer("aws/a", "cpu-a", 1.0), offer("gcp/a", "cpu-g", 0.5)), rules(),
                      Policy(all_clouds=True))
solve_milp(problem, cheapest_per_location(problem), with_time=True)
print("planned")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "planned\n", "")
