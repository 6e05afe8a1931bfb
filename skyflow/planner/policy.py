"""Policy: what the plan optimizes and where it may place stages; filled in by the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LOCAL = "local"
# Transfer time between two locations: 100 MB/s, a typical single-stream rate between clouds.
DEFAULT_TRANSFER_GB_PER_HOUR = 360.0


@dataclass(frozen=True)
class LocalCapacity:
    """The machine skyflow runs on; it is the location `local`, at $0 an hour."""

    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.cpus, self.memory_gb, tuple(sorted(self.gpus.items()))))


@dataclass(frozen=True)
class Policy:
    """Objective and constraints of one planning call.

    ``enabled_clouds`` are the clouds the user can launch on (the CLI checks credentials);
    None means every cloud of the catalog. ``infra`` (``--infra``) limits the places considered
    to those named, ``all_clouds`` plans over every catalog cloud whether enabled or not, and
    leaves `local` out unless ``infra`` names it.
    """

    objective: Literal["cost", "time"] = "cost"
    deadline_h: float | None = None
    max_cost_usd: float | None = None
    allowed_clouds: tuple[str, ...] | None = None
    blocked_clouds: tuple[str, ...] = ()
    allowed_regions: tuple[str, ...] | None = None
    blocked_regions: tuple[str, ...] = ()
    infra: tuple[str, ...] | None = None
    all_clouds: bool = False
    enabled_clouds: tuple[str, ...] | None = None
    local: LocalCapacity = field(default_factory=LocalCapacity)
    observed_hours: dict[str, dict[str, float]] = field(default_factory=dict)
    observed_size_gb: dict[str, float] = field(default_factory=dict)
    transfer_gb_per_hour: float = DEFAULT_TRANSFER_GB_PER_HOUR

    def __post_init__(self) -> None:
        if self.objective not in ("cost", "time"):
            raise ValueError(f"objective must be 'cost' or 'time', got {self.objective!r}")
        if self.deadline_h is not None and self.deadline_h <= 0:
            raise ValueError(f"deadline_h must be positive, got {self.deadline_h}")
        if self.max_cost_usd is not None and self.max_cost_usd < 0:
            raise ValueError(f"max_cost_usd must be >= 0, got {self.max_cost_usd}")
        if self.transfer_gb_per_hour <= 0:
            raise ValueError(f"transfer_gb_per_hour must be positive, got {self.transfer_gb_per_hour}")

    @property
    def uses_time(self) -> bool:
        """Whether stage hours and transfer times take part in the optimization."""
        return self.objective == "time" or self.deadline_h is not None or self.max_cost_usd is not None

    def local_considered(self) -> bool:
        if self.infra is not None:
            return any(entry.split("/", 1)[0] == LOCAL for entry in self.infra)
        return not self.all_clouds and self._cloud_allowed(LOCAL)

    def local_forced(self) -> bool:
        """`--infra local` alone: run locally even where the machine looks too small."""
        return self.infra is not None and all(entry == LOCAL for entry in self.infra)

    def clouds_considered(self, catalog_clouds: tuple[str, ...]) -> tuple[str, ...]:
        clouds = list(catalog_clouds)
        if not self.all_clouds and self.enabled_clouds is not None:
            clouds = [c for c in clouds if c in self.enabled_clouds]
        if self.infra is not None:
            named = {entry.split("/", 1)[0] for entry in self.infra}
            clouds = [c for c in clouds if c in named]
        return tuple(c for c in clouds if self._cloud_allowed(c))

    def _cloud_allowed(self, cloud: str) -> bool:
        if cloud in self.blocked_clouds:
            return False
        return self.allowed_clouds is None or cloud in self.allowed_clouds or cloud == LOCAL

    def region_allowed(self, cloud: str, region: str) -> bool:
        """Region filters accept ``region`` or ``cloud/region``; ``--infra`` pins by prefix."""
        names = (region, f"{cloud}/{region}")
        if any(n in self.blocked_regions for n in names):
            return False
        if self.allowed_regions is not None and not any(n in self.allowed_regions for n in names):
            return False
        if self.infra is None:
            return True
        return any(_infra_covers(entry, cloud, region) for entry in self.infra)


def _infra_covers(entry: str, cloud: str, region: str) -> bool:
    parts = entry.split("/")
    return parts[0] == cloud and (len(parts) == 1 or parts[1] in ("*", region))
