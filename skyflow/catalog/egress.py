"""EgressModel: USD per GB to move data between two locations (`cloud/region` or `local`)."""

from __future__ import annotations

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
            seen: dict[Tiers, int] = {}
            n = len(locations)
            ids = np.zeros((n, n), dtype=np.int64)
            for i, src in enumerate(locations):
                row = ids[i]
                for j, dst in enumerate(locations):
                    row[j] = seen.setdefault(self.tiers(src, dst), len(seen))
            found = self._matrices[locations] = (ids, tuple(seen))
        return found

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
