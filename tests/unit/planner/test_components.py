"""Independent parts of a pipeline are planned each on its own, to the same cheapest plan as the whole."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tables import catalog, offer, pipeline, rules

from skyflow.planner import Policy, plan_pipeline
from skyflow.planner import core as core_module
from skyflow.planner.components import independent_parts, part_problem
from skyflow.planner.core import _problem
from skyflow.planner.problem import evaluate
from skyflow.planner.solve import solve_milp_bounded

REGIONS = [f"{cloud}/r{i}" for cloud in ("aws", "gcp", "azure") for i in range(3)]
EGRESS = rules(("aws", "aws", 0.02), ("gcp", "gcp", 0.01), ("azure", "azure", 0.02), ("aws", "*", 0.09),
               ("gcp", "*", 0.12), ("azure", "*", 0.087))


def _catalog(rng: random.Random) -> Any:
    return catalog(*[offer(loc, f"{kind}-{loc}", rng.uniform(0.5, 3.0) * base, acc=acc, count=1 if acc else 0)
                     for loc in REGIONS for kind, base, acc in (("cpu", 1.0, None), ("gpu", 4.0, "L4"))])


def _part(prefix: str, rng: random.Random, n: int) -> dict[str, Any]:
    """A DAG with undirected cycles (not a forest): each stage reads one to three earlier ones."""
    stages: dict[str, Any] = {}
    for i in range(n):
        parents = rng.sample(range(max(0, i - 5), i), min(i, rng.randint(1, 3))) if i else []
        stages[f"{prefix}{i}"] = {"resources": {"accelerators": "L4:1"} if rng.random() < 0.5 else {},
                                  "estimate": rng.randint(1, 5), "outputs": {"o": rng.choice([1, 50, 300])},
                                  "inputs": {f"i{j}": f"{prefix}{p}.o" for j, p in enumerate(parents)}}
    return stages


def test_parts_are_linked_by_producers_and_by_a_shared_input() -> None:
    cat = _catalog(random.Random(1))
    p = pipeline({"a": {"outputs": {"o": 5}}, "b": {"inputs": {"x": "a.o"}},
                  "c": {"inputs": {"r": "raw"}}, "d": {"inputs": {"r": "raw"}}, "e": {}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r0", "size_gb": 10}})
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    parts = [[problem.names[s] for s in part] for part in independent_parts(problem)]
    assert sorted(parts) == [["a", "b"], ["c", "d"], ["e"]]
    sub = part_problem(problem, independent_parts(problem)[0])
    assert sub.names == [problem.names[s] for s in independent_parts(problem)[0]]
    assert all(t.consumers and max(t.consumers) < len(sub.names) for t in sub.transfers)


def test_each_part_keeps_its_own_transfers_and_orderings_renumbered() -> None:
    cat = _catalog(random.Random(2))
    p = pipeline({"a": {"outputs": {"o": 5}}, "b": {"inputs": {"x": "a.o"}, "depends_on": ["e"]},
                  "c": {"inputs": {"r": "raw"}, "outputs": {"o": 3}}, "d": {"inputs": {"r": "raw", "y": "c.o"}},
                  "e": {"depends_on": ["c"]}, "f": {"inputs": {"x": "a.o"}, "depends_on": ["a"]}},
                 {"raw": {"uri": "s3://b/raw", "infra": "aws/r0", "size_gb": 10}})
    problem, _ = _problem(p, cat, EGRESS, Policy(all_clouds=True))
    parts = independent_parts(problem)
    assert len(parts) == 3
    for stages in parts:
        sub = part_problem(problem, stages)
        number = {s: i for i, s in enumerate(stages)}  # each part's own stage numbers
        mine = [t for t in problem.transfers if t.consumers[0] in number]
        assert [(t.artifact, t.size_gb, t.source, t.producer, t.consumers) for t in sub.transfers] == [
            (t.artifact, t.size_gb, t.source, None if t.producer is None else number[t.producer],
             tuple(number[c] for c in t.consumers)) for t in mine]
        assert sub.ordering == [(number[a], number[b]) for a, b in problem.ordering if a in number and b in number]
        assert sub.names == [problem.names[s] for s in stages]
        assert sub.options == [problem.options[s] for s in stages]
    orders = {problem.names[a] + ">" + problem.names[b] for a, b in problem.ordering}
    subs = [part_problem(problem, stages) for stages in parts]
    kept = {sub.names[a] + ">" + sub.names[b] for sub in subs for a, b in sub.ordering}
    assert {"a>f", "e>b", "c>e"} <= orders and kept == orders - {"e>b", "c>e"}  # across parts: not kept


@pytest.mark.parametrize("seed", range(4))
def test_a_pipeline_of_independent_parts_plans_as_the_whole_would_and_each_part_alone(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    cat = _catalog(rng)
    left, right = _part("l", rng, 14), _part("r", rng, 12)
    inputs = {"raw": {"uri": "s3://b/raw", "infra": "aws/r0", "size_gb": 200}}
    left["l0"]["inputs"] = {"raw": "raw"}
    whole = pipeline({**left, **right}, inputs)
    policy = Policy(all_clouds=True, time_limit_s=0)

    sizes: list[int] = []
    real_search = solve_milp_bounded  # what core imports

    def recording_search(problem: Any, keep: Any, **kwargs: Any) -> Any:
        sizes.append(len(keep))
        return real_search(problem, keep, **kwargs)

    monkeypatch.setattr(core_module, "solve_milp_bounded", recording_search)
    split = plan_pipeline(whole, cat, EGRESS, policy, baseline=False)
    assert split.gap == 0 and split.solver == "milp"
    assert sorted(sizes) == [12, 14]  # one search per part, holding only its stages

    alone = [plan_pipeline(pipeline(part, inputs if part is left else None), cat, EGRESS, policy, baseline=False)
             for part in (left, right)]
    assert split.total_usd == pytest.approx(sum(plan.total_usd for plan in alone))
    for plan in alone:
        for name, placement in plan.stages.items():
            assert split.stages[name].compute_usd == pytest.approx(placement.compute_usd)

    monkeypatch.setattr(core_module, "independent_parts", lambda problem: [list(range(len(problem.names)))])
    joint = plan_pipeline(whole, cat, EGRESS, policy, baseline=False)  # one program for the whole
    assert joint.total_usd == pytest.approx(split.total_usd)
    problem, _ = _problem(whole, cat, EGRESS, policy)
    chosen = [problem.options[s].index(split.stages[name]) for s, name in enumerate(problem.names)]
    assert evaluate(problem, chosen).total_usd == pytest.approx(split.total_usd)


def test_under_a_time_limit_the_parts_bounds_add_up() -> None:
    rng = random.Random(7)
    cat = _catalog(rng)
    whole = pipeline({**_part("l", rng, 60), **_part("r", rng, 60)})
    exact = plan_pipeline(whole, cat, EGRESS, Policy(all_clouds=True, time_limit_s=0), baseline=False)
    quick = plan_pipeline(whole, cat, EGRESS, Policy(all_clouds=True, time_limit_s=1e-6), baseline=False)
    assert quick.total_usd >= exact.total_usd - 1e-6
    bound = exact.total_usd if quick.lower_bound_usd is None else quick.lower_bound_usd
    assert bound <= exact.total_usd + 1e-6
