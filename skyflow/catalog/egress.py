"""EgressModel: USD per GB to move data between two locations (`cloud/region` or `local`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

LOCAL = "local"


@dataclass(frozen=True)
class Tiers:
    """Marginal price tiers: ``((upto_gb, usd_per_gb), ...)``; the last tier's bound is inf.

    Marginal means each GB is priced by the tier it falls in, so the total is monotone in size
    and never drops at a tier boundary.
    """

    steps: tuple[tuple[float, float], ...]

    @classmethod
    def flat(cls, usd_per_gb: float) -> Tiers:
        return cls(((float("inf"), usd_per_gb),))

    @property
    def first_rate(self) -> float:
        return self.steps[0][1] if self.steps else 0.0

    def cost_usd(self, size_gb: float) -> float:
        total, below = 0.0, 0.0
        for upto, rate in self.steps:
            if size_gb <= below:
                break
            total += (min(size_gb, upto) - below) * rate
            below = upto
        return total


FREE = Tiers.flat(0.0)


@dataclass(frozen=True)
class CloudEgress:
    """A cloud's list prices: between its own regions, and out to the internet or other clouds."""

    inter_region: Tiers
    internet: Tiers


@dataclass(frozen=True)
class EgressRule:
    """One override: ``from``/``to`` are `*`, a cloud, `cloud/region`, or `local`."""

    source: str
    target: str
    usd_per_gb: float

    def specificity(self, source: str, target: str) -> int | None:
        a, b = _match(self.source, source), _match(self.target, target)
        return None if a is None or b is None else a + b


def _match(pattern: str, location: str) -> int | None:
    if pattern == "*":
        return 0
    if pattern == location:
        return 2
    if "/" not in pattern and location.split("/", 1)[0] == pattern and location != LOCAL:
        return 1
    return None


@dataclass(frozen=True)
class EgressModel:
    """Per-cloud list prices, overridden by rules (the most specific wins; ties go to the earlier).

    Inside one region moving data is free; from `local` to anywhere is free; between regions of
    one cloud the cloud's inter-region rate applies; otherwise the source cloud's internet rate.
    A cloud missing from ``clouds`` is charged nothing.
    """

    clouds: dict[str, CloudEgress] = field(default_factory=dict)
    rules: tuple[EgressRule, ...] = ()

    _cache: dict[tuple[str, str], Tiers] = field(default_factory=dict, init=False, repr=False, compare=False)
    _matrices: dict[tuple[str, ...], tuple[np.ndarray, tuple[Tiers, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def tiers(self, source: str, target: str) -> Tiers:
        """The price schedule of one transfer from ``source`` to ``target``."""
        key = (source, target)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = _tiers(self, source, target)
        return found

    def tier_matrix(self, locations: tuple[str, ...]) -> tuple[np.ndarray, tuple[Tiers, ...]]:
        """ids[i, j] indexes the schedule from locations[i] to locations[j] (cached per location list)."""
        found = self._matrices.get(locations)
        if found is None:
            found = self._matrices[locations] = self._build_tier_matrix(locations)
        return found

    def _build_tier_matrix(self, locations: tuple[str, ...]) -> tuple[np.ndarray, tuple[Tiers, ...]]:
        """Locations that no rule names exactly are priced alike within their cloud (moving data within
        one location is free): schedules are found once per pair of such classes, a few hundred pairs,
        instead of once per pair of locations, tens of thousands on a full catalog, and spread with numpy."""
        names = list(dict.fromkeys(locations))
        classes: dict[tuple[str, str], list[str]] = {}
        for name in names:
            classes.setdefault(self._price_class(name), []).append(name)
        members = list(classes.values())
        seen: dict[Tiers, int] = {FREE: 0}
        by_class = np.zeros((len(members), len(members)), dtype=np.int64)
        for a, sources in enumerate(members):
            for b, targets in enumerate(members):
                if a != b:
                    by_class[a, b] = seen.setdefault(self.tiers(sources[0], targets[0]), len(seen))
                elif len(sources) > 1:
                    by_class[a, b] = seen.setdefault(self.tiers(sources[0], sources[1]), len(seen))
        class_index = {name: k for k, group in enumerate(members) for name in group}
        of_name = np.array([class_index[name] for name in names], dtype=np.int64)
        unique = by_class[np.ix_(of_name, of_name)]
        np.fill_diagonal(unique, 0)  # from a location to itself: free
        position = {name: i for i, name in enumerate(names)}
        at = np.array([position[loc] for loc in locations], dtype=np.int64)
        return unique[np.ix_(at, at)], tuple(seen)

    def _price_class(self, location: str) -> tuple[str, str]:
        """Locations of one class pay the same schedule to and from every other location."""
        if location in self._rule_locations or "/" not in location:
            return ("exact", location)
        return ("cloud", location.split("/", 1)[0])

    @functools.cached_property
    def _rule_locations(self) -> frozenset[str]:
        return frozenset(p for rule in self.rules for p in (rule.source, rule.target))

    def rate_usd_per_gb(self, source: str, target: str) -> float:
        """The marginal price of the first GB moved."""
        return self.tiers(source, target).first_rate

    def estimate_egress_usd(self, size_gb: float, source: str, target: str) -> float:
        if size_gb < 0:
            raise ValueError(f"size_gb must be >= 0, got {size_gb}")
        return self.tiers(source, target).cost_usd(size_gb)


def _tiers(model: EgressModel, source: str, target: str) -> Tiers:
    if source == target:
        return FREE
    best: tuple[int, EgressRule] | None = None
    for rule in model.rules:
        score = rule.specificity(source, target)
        if score is not None and (best is None or score > best[0]):
            best = (score, rule)
    if best is not None:
        return Tiers.flat(best[1].usd_per_gb)
    if source == LOCAL:
        return FREE
    src_cloud = source.split("/", 1)[0]
    prices = model.clouds.get(src_cloud)
    if prices is None:
        return FREE
    if target != LOCAL and target.split("/", 1)[0] == src_cloud:
        return prices.inter_region
    return prices.internet
