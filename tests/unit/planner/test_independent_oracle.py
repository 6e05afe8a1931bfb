"""The planner's plans against an oracle that does not share its code: the same small pipelines and
catalog rows, priced from the rows by tests/unit/planner/cost_oracle.py (brute force over one row per
stage, the model as docs/planner.md states it), under minimise-cost, a deadline, minimise-time and a
budget. test_brute_force.py proves the solver finds the optimum of skyflow's own model; this proves
that model prices what the docs say."""

from __future__ import annotations

from typing import Any

import pytest
from cost_oracle import OracleStage, Row, best_plan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tables import catalog, offer, pipeline, rules

from skyflow.errors import PlanningError
from skyflow.planner import Policy, plan_pipeline

LOCATIONS = ["aws/a", "aws/b", "gcp/a", "gcp/b", "lambda/a"]
KINDS = ["cpu", "A100", "L4"]


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    rows = []
    for loc in LOCATIONS:
        for kind in KINDS:
            if draw(st.booleans()):
                acc = None if kind == "cpu" else kind
                rows.append(Row(loc, f"{kind}-{loc}", draw(st.integers(1, 40)) / 4, acc, 1.0 if acc else 0.0))
    stages = []
    for i in range(draw(st.integers(2, 4))):
        parents = tuple(f"s{j}" for j in range(i) if draw(st.integers(0, 2)) == 0)
        kind = draw(st.sampled_from(KINDS))
        stages.append(OracleStage(f"s{i}", float(draw(st.integers(1, 4))), draw(st.sampled_from([1, 1, 2])),
                                  None if kind == "cpu" else kind, parents,
                                  float(draw(st.sampled_from([0, 5, 40, 200])))))
    raw = None
    if draw(st.booleans()):
        raw = (draw(st.sampled_from(LOCATIONS)), 50.0)
        stages[0] = OracleStage(stages[0].name, stages[0].hours, stages[0].nodes, stages[0].accelerator,
                                ("raw", *stages[0].inputs), stages[0].output_gb)
    egress = [(a, b, draw(st.sampled_from([0.0, 0.01, 0.05, 0.1])))
              for a, b in [("aws", "aws"), ("gcp", "gcp"), ("aws", "*"), ("gcp", "*"), ("*", "*")]]
    if draw(st.booleans()):
        egress.insert(0, ("aws/a", "gcp/b", draw(st.sampled_from([0.0, 0.2]))))
    return {"rows": rows, "stages": stages, "raw": raw, "egress": egress}


def _skyflow(case: dict[str, Any]) -> tuple[Any, Any, Any]:
    cat = catalog(*(offer(r.location, r.instance, r.hourly, acc=r.accelerator, count=r.count) for r in case["rows"]))
    specs: dict[str, Any] = {}
    for s in case["stages"]:
        refs = {f"i{j}": ("raw" if p == "raw" else f"{p}.o") for j, p in enumerate(s.inputs)}
        spec: dict[str, Any] = {"estimate": s.hours, "num_nodes": s.nodes, "outputs": {"o": s.output_gb},
                                "inputs": refs}
        if s.accelerator:
            spec["resources"] = {"accelerators": f"{s.accelerator}:1"}
        specs[s.name] = spec
    inputs = {"raw": {"uri": "s3://b/raw", "infra": case["raw"][0], "size_gb": case["raw"][1]}} if case["raw"] else None
    return cat, pipeline(specs, inputs), rules(*case["egress"])


def _oracle(case: dict[str, Any], **constraints: Any) -> Any:
    try:
        return best_plan(case["stages"], case["rows"], case["egress"], case["raw"], **constraints)
    except LookupError:
        return LookupError


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(cases(), st.sampled_from([None, None, 4.0, 8.0]))
def test_the_cheapest_plan_costs_what_the_oracle_prices(case: dict[str, Any], deadline: float | None) -> None:
    cat, p, egress = _skyflow(case)
    expected = _oracle(case, deadline_h=deadline)
    policy = Policy(all_clouds=True, deadline_h=deadline)
    if expected is LookupError or expected is None:
        with pytest.raises(PlanningError):
            plan_pipeline(p, cat, egress, policy, baseline=False)
        return
    plan = plan_pipeline(p, cat, egress, policy, baseline=False)
    assert plan.total_usd == pytest.approx(expected.usd, abs=1e-6)
    if deadline is not None:
        assert plan.total_hours <= deadline + 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(cases(), st.sampled_from([None, 0.8, 1.0, 1.5]))
def test_the_fastest_plan_takes_the_time_the_oracle_finds(case: dict[str, Any], budget: float | None) -> None:
    cat, p, egress = _skyflow(case)
    cheapest = _oracle(case)
    if cheapest is LookupError:
        return  # a stage runs nowhere: the cost test covers the error
    max_usd = None if budget is None else cheapest.usd * budget
    expected = _oracle(case, minimize="time", max_usd=max_usd)
    policy = Policy(all_clouds=True, objective="time", max_cost_usd=max_usd)
    if expected is None:
        with pytest.raises(PlanningError):
            plan_pipeline(p, cat, egress, policy, baseline=False)
        return
    plan = plan_pipeline(p, cat, egress, policy, baseline=False)
    assert plan.total_hours == pytest.approx(expected.hours, abs=1e-5)
    assert plan.total_usd == pytest.approx(expected.usd, abs=1e-5)


def test_the_oracle_is_not_the_planner() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent / "cost_oracle.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.startswith("skyflow") for name in imported)
