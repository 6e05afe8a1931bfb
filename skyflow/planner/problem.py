"""The planning problem as numbers: options per stage, transfers between them, and its cost function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyflow.catalog import EgressModel
from skyflow.planner.plan import EgressCharge, Placement
from skyflow.planner.policy import Policy
from skyflow.spec.graph import ResolvedPipeline


@dataclass(frozen=True)
class Transfer:
    """One artifact, moved once from where it is to each distinct location that consumes it."""

    artifact: str
    size_gb: float
    producer: int | None  # stage index; None for a pipeline input
    source: str | None  # fixed location of a pipeline input
    consumers: tuple[int, ...]  # stage indices, in pipeline order


@dataclass
class Problem:
    """Stages in topological order, each with its candidate placements."""

    names: list[str]
    options: list[list[Placement]]
    transfers: list[Transfer]
    ordering: list[tuple[int, int]]  # depends_on (before, after): time only
    egress: EgressModel
    transfer_gb_per_hour: float

    def __post_init__(self) -> None:
        locs = sorted({p.infra for opts in self.options for p in opts}
                      | {t.source for t in self.transfers if t.source})
        self.locations = locs
        self.loc_index = {loc: i for i, loc in enumerate(locs)}
        self.opt_loc = [np.array([self.loc_index[p.infra] for p in opts], dtype=np.int64) for opts in self.options]
        self.opt_compute = [np.array([p.compute_usd for p in opts]) for opts in self.options]
        self.opt_hours = [np.array([p.hours for p in opts]) for opts in self.options]
        self._tier_ids: np.ndarray | None = None
        self._tiers: list[object] = []
        self._cost_cache: dict[float, np.ndarray] = {}

    def cost_matrix(self, size_gb: float) -> np.ndarray:
        """USD to move ``size_gb`` from location i to location j, for all location indices."""
        found = self._cost_cache.get(size_gb)
        if found is not None:
            return found
        ids = self._tier_id_matrix()
        per_tier = np.array([t.cost_usd(size_gb) for t in self._tiers])  # type: ignore[attr-defined]
        found = self._cost_cache[size_gb] = per_tier[ids]
        return found

    def _tier_id_matrix(self) -> np.ndarray:
        if self._tier_ids is None:
            seen: dict[object, int] = {}
            n = len(self.locations)
            ids = np.zeros((n, n), dtype=np.int64)
            for i, src in enumerate(self.locations):
                for j, dst in enumerate(self.locations):
                    tiers = self.egress.tiers(src, dst)
                    ids[i, j] = seen.setdefault(tiers, len(seen))
            self._tiers = list(seen)
            self._tier_ids = ids
        return self._tier_ids

    def transfer_hours(self, size_gb: float) -> float:
        return size_gb / self.transfer_gb_per_hour


def build_problem(pipeline: ResolvedPipeline, options: dict[str, list[Placement]], egress: EgressModel,
                  policy: Policy) -> tuple[Problem, list[str]]:
    """Group the pipeline's data edges into transfers; sizes from the spec, else history, else 0."""
    names = list(pipeline.order)
    index = {n: i for i, n in enumerate(names)}
    warnings: list[str] = []
    groups: dict[tuple[str, str], list[int]] = {}
    for edge in pipeline.edges:
        if edge.kind == "uri":
            continue
        key = (edge.producer or "", edge.artifact)
        consumers = groups.setdefault(key, [])
        if index[edge.consumer] not in consumers:
            consumers.append(index[edge.consumer])
    transfers = []
    for (producer, artifact), consumers in groups.items():
        consumers.sort()
        if producer:
            ref = f"{producer}.{artifact}"
            size = pipeline.stages[producer].outputs[artifact].size_gb
            size = policy.observed_size_gb.get(ref) if size is None else size
            if size is None:
                warnings.append(f"{ref} has no size_gb and no history; its transfers are counted as 0 GB")
            transfers.append(Transfer(ref, size or 0.0, index[producer], None, tuple(consumers)))
            continue
        spec_input = pipeline.spec.inputs[artifact]
        if spec_input.infra is None:
            if spec_input.size_gb:
                warnings.append(f"input {artifact!r} has no infra; moving it is counted as free")
            continue
        transfers.append(Transfer(artifact, spec_input.size_gb or 0.0, None, spec_input.infra, tuple(consumers)))
    ordering = [(index[a], index[b]) for a, b in pipeline.ordering]
    problem = Problem(names, [options[n] for n in names], transfers, ordering, egress, policy.transfer_gb_per_hour)
    return problem, warnings


@dataclass(frozen=True)
class Evaluation:
    compute_usd: float
    egress: tuple[EgressCharge, ...]
    hours: float

    @property
    def total_usd(self) -> float:
        return self.compute_usd + sum(e.usd for e in self.egress)


def evaluate(problem: Problem, choice: list[int]) -> Evaluation:
    """The exact cost and critical-path time of one option per stage (the definition solvers meet)."""
    placed = [problem.options[s][o] for s, o in enumerate(choice)]
    compute = sum(p.compute_usd for p in placed)
    charges: list[EgressCharge] = []
    arrive = [0.0] * len(placed)  # when a stage's last input is in place
    moved_hours: dict[tuple[int, int], float] = {}
    for t in problem.transfers:
        source = t.source if t.source is not None else placed[t.producer].infra  # type: ignore[index]
        done: set[str] = set()
        for c in t.consumers:
            target = placed[c].infra
            if target == source:
                continue
            if target not in done:
                done.add(target)
                usd = problem.egress.estimate_egress_usd(t.size_gb, source, target)
                charges.append(EgressCharge(t.artifact, problem.names[c], source, target, t.size_gb, usd))
            if t.producer is None:
                arrive[c] = max(arrive[c], problem.transfer_hours(t.size_gb))
            else:
                key = (t.producer, c)
                moved_hours[key] = max(moved_hours.get(key, 0.0), problem.transfer_hours(t.size_gb))
    preds: dict[int, set[int]] = {}
    for t in problem.transfers:
        if t.producer is not None:
            for c in t.consumers:
                preds.setdefault(c, set()).add(t.producer)
    for a, b in problem.ordering:
        preds.setdefault(b, set()).add(a)
    finish = [0.0] * len(placed)
    for s in range(len(placed)):  # stages are in topological order
        start = arrive[s]
        for p in preds.get(s, ()):
            start = max(start, finish[p] + moved_hours.get((p, s), 0.0))
        finish[s] = start + placed[s].hours
    return Evaluation(compute, tuple(charges), max(finish, default=0.0))
