"""The planning problem as numbers: options per stage, transfers between them, and its cost function."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyflow.catalog import EgressModel
from skyflow.planner.plan import EgressCharge, Placement
from skyflow.planner.policy import Policy, egress_aliases
from skyflow.spec.graph import ResolvedPipeline


@dataclass(frozen=True)
class Transfer:
    """One artifact, moved once from where it is to each distinct location that consumes it."""

    artifact: str
    size_gb: float
    producer: int | None  # stage index; None for a pipeline input
    source: str | None  # fixed location of a pipeline input
    consumers: tuple[int, ...]  # stage indices, in pipeline order


# Transfer costs of a problem are also held as dense (location x location) arrays, one per artifact size, up to
# this many entries in all (32 MiB); past it, each is read through the shared schedule ids.
DENSE_ENTRIES = 4 * 1024 * 1024


class TransferCosts:
    """Moving one size of artifact between every pair of locations: a price per egress schedule and the
    shared (location x location) schedule ids, and the dense matrix when the problem could afford it.
    Artifacts of many sizes (one matrix each) were most of the memory of planning a 5,000-stage DAG; a
    read through the ids gathers twice."""

    __slots__ = ("dense", "ids", "per_tier")

    def __init__(self, per_tier: np.ndarray, ids: np.ndarray, *, dense: bool = False) -> None:
        self.per_tier = per_tier
        self.ids = ids
        self.dense: np.ndarray | None = per_tier[ids] if dense else None

    def __getitem__(self, key: Any) -> Any:
        """``costs[u, v]``, ``costs[u]``, ``costs[:, dests]``, ``costs[np.ix_(a, b)]``: as on the dense array."""
        if self.dense is not None:
            return self.dense[key]
        return self.per_tier[self.ids[key]]


@dataclass
class Problem:
    """Stages in topological order, each with its candidate placements."""

    names: list[str]
    options: list[list[Placement]]
    transfers: list[Transfer]
    ordering: list[tuple[int, int]]  # depends_on (before, after): time only
    egress: EgressModel
    transfer_gb_per_hour: float
    egress_alias: dict[str, str] = field(default_factory=dict)  # pool -> where its egress is priced

    def egress_usd(self, size_gb: float, source: str, target: str) -> float:
        if source == target:
            return 0.0
        alias = self.egress_alias
        return self.egress.estimate_egress_usd(size_gb, alias.get(source, source), alias.get(target, target))

    def __post_init__(self) -> None:
        locs = sorted({p.infra for opts in self.options for p in opts}
                      | {t.source for t in self.transfers if t.source})
        self.locations = locs
        self.loc_index = {loc: i for i, loc in enumerate(locs)}
        self.cloud_names = sorted({loc.split("/", 1)[0] for loc in locs})
        self.loc_cloud = np.array([self.cloud_names.index(loc.split("/", 1)[0]) for loc in locs], dtype=np.int64)
        self.opt_loc = [np.array([self.loc_index[p.infra] for p in opts], dtype=np.int64) for opts in self.options]
        self.opt_compute = [np.array([p.compute_usd for p in opts]) for opts in self.options]
        self.opt_hours = [np.array([p.hours for p in opts]) for opts in self.options]
        self._tier_ids: np.ndarray | None = None
        self._tiers: list[object] = []
        self._cost_cache: dict[float, TransferCosts] = {}
        self._dense_left = DENSE_ENTRIES

    def cost_matrix(self, size_gb: float) -> TransferCosts:
        """USD to move ``size_gb`` from location i to location j, indexed like a (location x location) array."""
        found = self._cost_cache.get(size_gb)
        if found is None:
            ids = self._tier_id_matrix()
            dense = self._dense_left >= ids.size
            if dense:
                self._dense_left -= ids.size
            prices = np.array([t.cost_usd(size_gb) for t in self._tiers])  # type: ignore[attr-defined]
            found = TransferCosts(prices, ids, dense=dense)
            self._cost_cache[size_gb] = found
        return found

    def tier_ids(self) -> np.ndarray:
        """ids[i, j]: which price schedule moving data from location i to j pays (equal ids, equal prices)."""
        return self._tier_id_matrix()

    def _tier_id_matrix(self) -> np.ndarray:
        if self._tier_ids is None:
            # Pools pay egress as the location they sit in; two names for one place move data free.
            priced = tuple(self.egress_alias.get(loc, loc) for loc in self.locations)
            self._tier_ids, tiers = self.egress.tier_matrix(priced)
            self._tiers = list(tiers)
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
        if edge.kind == "uri" and uri_location(edge.artifact) is None:
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
        found = _input_transfer(pipeline, artifact, tuple(consumers), policy, warnings)
        if found is not None:
            transfers.append(found)
    ordering = [(index[a], index[b]) for a, b in pipeline.ordering]
    problem = Problem(names, [options[n] for n in names], transfers, ordering, egress, policy.transfer_gb_per_hour,
                      egress_aliases(policy.pools))
    return problem, warnings


# Object-store schemes and the cloud that bills reading from them.
URI_CLOUDS = {"s3": "aws", "s3a": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure",
              "abfss": "azure"}


def uri_location(uri: str) -> str | None:
    """``aws/*`` for ``s3://...``: the bucket's cloud, region unknown (priced as another region)."""
    scheme, sep, _ = uri.partition("://")
    cloud = URI_CLOUDS.get(scheme.lower()) if sep else None
    return f"{cloud}/*" if cloud else None


def _input_transfer(pipeline: ResolvedPipeline, artifact: str, consumers: tuple[int, ...], policy: Policy,
                    warnings: list[str]) -> Transfer | None:
    """A pipeline input (declared infra, else its URI's cloud) or a raw object-store URI (size from history)."""
    spec_input = pipeline.spec.inputs.get(artifact)
    if spec_input is None:  # a raw URI read by a stage
        size = policy.observed_size_gb.get(artifact)
        source = uri_location(artifact)
        return Transfer(artifact, size, None, source, consumers) if size and source else None
    source = spec_input.infra or uri_location(spec_input.uri)
    if source is None:
        if spec_input.size_gb:
            warnings.append(f"input {artifact!r} has no infra; moving it is counted as free")
        return None
    return Transfer(artifact, spec_input.size_gb or 0.0, None, source, consumers)


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
                usd = problem.egress_usd(t.size_gb, source, target)
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
