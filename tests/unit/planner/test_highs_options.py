"""HiGHS takes every option the planner sets, or planning stops with an error."""

from __future__ import annotations

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
