"""Policy: what the plan optimizes and where it may place stages; filled in by the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LOCAL = "local"
# Transfer time between two locations: 100 MB/s, a typical single-stream rate between clouds.
DEFAULT_TRANSFER_GB_PER_HOUR = 360.0
DEFAULT_TIME_LIMIT_S = 10.0


@dataclass(frozen=True)
class LocalCapacity:
    """The machine skyflow runs on; it is the location `local`, at $0 an hour."""

    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.cpus, self.memory_gb, tuple(sorted(self.gpus.items()))))


@dataclass(frozen=True)
class PoolLocation:
    """Machines the user already has, as one planner location: an SSH pool, a Kubernetes context or a Ray cluster.

    ``name`` is the location (``ssh/lab``, ``kubernetes/ctx``). ``cpus``, ``memory_gb`` and
    ``accelerators`` describe one node (None: not declared, not checked). An SSH pool and a Ray cluster
    bill whole nodes at ``hourly_usd``; a Kubernetes context bills what a pod requests at the per-resource
    rates. ``egress_location`` is where the machines sit for egress prices (``gcp/us-central1``
    for a GKE context); None is on-premises, priced like `local`.
    """

    name: str
    kind: Literal["ssh", "kubernetes", "ray"]
    max_nodes: int
    cpus: float | None = None
    memory_gb: float | None = None
    accelerators: dict[str, int] = field(default_factory=dict)
    hourly_usd: float = 0.0
    cpu_hourly_usd: float = 0.0
    memory_gb_hourly_usd: float = 0.0
    accelerators_hourly_usd: dict[str, float] = field(default_factory=dict)
    egress_location: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ssh", "kubernetes", "ray"):
            raise ValueError(f"pool kind must be 'ssh', 'kubernetes' or 'ray', got {self.kind!r}")
        if not self.name.startswith(f"{self.kind}/") or self.name == f"{self.kind}/":
            raise ValueError(f"pool name must look like {self.kind}/NAME, got {self.name!r}")
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.max_nodes, self.cpus, self.memory_gb,
                     tuple(sorted(self.accelerators.items())), self.hourly_usd))

    @property
    def short_name(self) -> str:
        """``lab`` of ``ssh/lab``."""
        return self.name.split("/", 1)[1]

    @property
    def egress_as(self) -> str:
        """The location whose egress prices this pool's traffic pays."""
        return self.egress_location or LOCAL


@dataclass(frozen=True)
class CachedCopy:
    """A stage's outputs already exist at ``location`` (`local`, ``aws/us-east-1``, a pool name).

    The planner offers the copy as one more placement of the stage: no compute and no hours, at
    that location, so moving the outputs to their consumers is priced from there ("transfer at $X"
    against "recompute at $Y"). ``size_gb`` is the outputs' total size, for display.
    """

    location: str
    size_gb: float = 0.0


@dataclass(frozen=True)
class Policy:
    """Objective and constraints of one planning call.

    ``enabled_clouds`` are the clouds the user can launch on (the CLI checks credentials);
    None means every cloud of the catalog. ``infra`` (``--infra``) limits the places considered
    to those named, ``all_clouds`` plans over every catalog cloud whether enabled or not, and
    leaves `local` out unless ``infra`` names it. ``pools`` (SSH pools, Kubernetes contexts) are
    candidate locations like `local`: always by default, with ``all_clouds`` only when ``infra``
    names them (``ssh/lab``, or ``ssh`` / ``kubernetes`` for all of a kind). ``cached`` lists, per
    stage, where its outputs already exist (the CLI predicts it from earlier runs).
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
    pools: tuple[PoolLocation, ...] = ()
    # Per stage, hours measured by earlier runs of the same work, keyed by where: "local" (this
    # machine) or the accelerator name ("default" for machines without one).
    observed_hours: dict[str, dict[str, float]] = field(default_factory=dict)
    observed_size_gb: dict[str, float] = field(default_factory=dict)
    transfer_gb_per_hour: float = DEFAULT_TRANSFER_GB_PER_HOUR
    cached: dict[str, tuple[CachedCopy, ...]] = field(default_factory=dict)
    # Seconds the integer program may search (HiGHS enforces it); the best plan found by then is
    # returned with its proven lower bound and gap. 0: no limit, prove the plan optimal.
    time_limit_s: float = DEFAULT_TIME_LIMIT_S

    def __post_init__(self) -> None:
        if self.objective not in ("cost", "time"):
            raise ValueError(f"objective must be 'cost' or 'time', got {self.objective!r}")
        if self.deadline_h is not None and self.deadline_h <= 0:
            raise ValueError(f"deadline_h must be positive, got {self.deadline_h}")
        if self.max_cost_usd is not None and self.max_cost_usd < 0:
            raise ValueError(f"max_cost_usd must be >= 0, got {self.max_cost_usd}")
        if self.transfer_gb_per_hour <= 0:
            raise ValueError(f"transfer_gb_per_hour must be positive, got {self.transfer_gb_per_hour}")
        if not self.time_limit_s >= 0:
            raise ValueError(f"time_limit_s must be >= 0 (0: no limit), got {self.time_limit_s}")

    @property
    def minimize(self) -> Literal["cost", "time"]:
        """What the plan minimizes: time under ``objective="time"`` or a budget (the fastest plan
        within it, then the cheapest of those), else cost."""
        return "time" if self.objective == "time" or self.max_cost_usd is not None else "cost"

    @property
    def solver_time_limit_s(self) -> float | None:
        """The integer program's time budget in seconds; None: search until the plan is proven optimal."""
        return self.time_limit_s or None

    @property
    def uses_time(self) -> bool:
        """Whether stage hours and transfer times take part in the optimization."""
        return self.objective == "time" or self.deadline_h is not None or self.max_cost_usd is not None

    def local_considered(self) -> bool:
        if self.infra is not None:
            return any(entry.split("/", 1)[0] == LOCAL for entry in self.infra)
        return not self.all_clouds and self._cloud_allowed(LOCAL)

    def pool_considered(self, pool: PoolLocation, pinned: bool = False) -> bool:
        """Whether ``pool`` is a candidate; ``pinned`` when the stage itself names it."""
        if pool.kind in self.blocked_clouds or pool.name in self.blocked_clouds:
            return False
        if self.infra is not None:
            return any(entry in (pool.name, pool.kind) for entry in self.infra)
        return pinned or not self.all_clouds

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


def egress_aliases(pools: tuple[PoolLocation, ...]) -> dict[str, str]:
    """Pool location -> the location whose egress prices it pays."""
    return {pool.name: pool.egress_as for pool in pools}


def infra_cloud_region(entry: str) -> tuple[str, str | None]:
    """An ``--infra`` entry's cloud and region (None when it names none; a zone entry pins by its region)."""
    parts = entry.split("/")
    return parts[0], parts[1] if len(parts) > 1 else None


def _infra_covers(entry: str, cloud: str, region: str) -> bool:
    entry_cloud, entry_region = infra_cloud_region(entry)
    return entry_cloud == cloud and (entry_region is None or entry_region in ("*", region))
