"""Plan: where each stage runs, what it costs, and which artifacts move where."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from skyflow.errors import PlanningError

if TYPE_CHECKING:
    from skyflow.spec.graph import ResolvedPipeline

__all__ = ["LOCAL_PLACEMENT", "Alternative", "EgressCharge", "HoursSource", "Placement", "Plan", "forced_plan"]

# Where a placement's hours come from (see candidates.stage_hours).
HoursSource = Literal["estimate", "history", "fallback"]


@dataclass(frozen=True)
class Placement:
    """One stage on one offer in one location (`local` or `cloud/region`), or its cached outputs there."""

    infra: str
    cloud: str
    region: str | None
    zone: str | None
    instance_type: str
    accelerators: dict[str, float]
    use_spot: bool
    num_nodes: int
    hourly_usd: float  # per node
    hours: float
    cached: bool = False  # the stage's outputs already exist here: nothing runs, they are reused
    # Which of the stage's resource alternatives (Resources.alternatives()) this placement serves.
    alternative: int = 0
    disk_size_gb: int | None = None
    # Where the location's machines are when its name does not say (a Kubernetes context's cluster,
    # e.g. aws/us-east-1 for EKS): the pipeline store and egress prices follow it.
    located_at: str | None = None
    # The artifact store the stage reads and writes; attached after planning (see with_stores).
    store_uri: str | None = None
    # Where ``hours`` come from: "estimate" (the stage's), "history" (earlier runs of the same work
    # on the same kind of machine) or "fallback" (neither: 1 hour assumed).
    hours_source: HoursSource = "estimate"

    @property
    def compute_usd(self) -> float:
        return self.hourly_usd * self.num_nodes * self.hours

    def __hash__(self) -> int:
        return hash((self.infra, self.instance_type, tuple(self.accelerators.items()), self.use_spot,
                     self.hourly_usd, self.hours, self.cached, self.alternative, self.store_uri))

    def to_json(self) -> dict[str, Any]:
        out = {
            "infra": self.infra, "cloud": self.cloud, "region": self.region, "zone": self.zone,
            "instance_type": self.instance_type,
            "accelerators": {k: int(v) if float(v).is_integer() else v for k, v in self.accelerators.items()},
            "use_spot": self.use_spot, "num_nodes": self.num_nodes, "hourly_usd": _usd(self.hourly_usd),
            "hours": round(self.hours, 6), "compute_usd": _usd(self.compute_usd),
        }
        if self.cached:
            out["cached"] = True
        if self.hours_source != "estimate" and not self.cached:  # absent: the stage's own estimate
            out["hours_source"] = self.hours_source
        for key in ("alternative", "disk_size_gb", "located_at", "store_uri"):
            value = getattr(self, key)
            if value:  # absent when unset, so plans of simple stages read as before
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Placement:
        """The placement `to_json` wrote (derived fields such as compute_usd are recomputed)."""
        try:
            return cls(
                infra=str(data["infra"]), cloud=str(data.get("cloud") or str(data["infra"]).split("/")[0]),
                region=_opt_str(data.get("region")), zone=_opt_str(data.get("zone")),
                instance_type=str(data.get("instance_type") or ""),
                accelerators={str(k): float(v) for k, v in (data.get("accelerators") or {}).items()},
                use_spot=bool(data.get("use_spot", False)), num_nodes=int(data.get("num_nodes", 1)),
                hourly_usd=float(data.get("hourly_usd", 0.0)), hours=float(data.get("hours", 0.0)),
                cached=bool(data.get("cached", False)), alternative=int(data.get("alternative", 0)),
                disk_size_gb=None if data.get("disk_size_gb") is None else int(data["disk_size_gb"]),
                located_at=_opt_str(data.get("located_at")), store_uri=_opt_str(data.get("store_uri")),
                hours_source=_hours_source(data.get("hours_source")))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanningError(f"not a stage placement: {dict(data)!r} ({exc})") from exc


@dataclass(frozen=True)
class EgressCharge:
    """One artifact moved once to one location; ``to_stage`` is its first consumer there."""

    artifact: str
    to_stage: str
    source: str
    target: str
    size_gb: float
    usd: float

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "to_stage": self.to_stage, "source": self.source,
                "target": self.target, "size_gb": self.size_gb, "usd": _usd(self.usd)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EgressCharge:
        try:
            return cls(artifact=str(data["artifact"]), to_stage=str(data["to_stage"]), source=str(data["source"]),
                       target=str(data["target"]), size_gb=float(data["size_gb"]), usd=float(data["usd"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanningError(f"not an egress charge: {dict(data)!r} ({exc})") from exc


@dataclass(frozen=True)
class Plan:
    """The chosen placement of every stage; built by `plan_pipeline`, never mutated."""

    pipeline: str
    objective: str
    stages: dict[str, Placement]
    egress: tuple[EgressCharge, ...]
    total_usd: float
    total_hours: float
    baseline_usd: float | None = None
    baseline_cloud: str | None = None
    warnings: tuple[str, ...] = ()
    solver: str = ""
    # The cost of the plan the same policy gives reusing no cached output; set when this one reuses some.
    recompute_usd: float | None = None
    # Set when the search stopped at the time limit before proving the plan optimal: proven lower
    # bounds of its cost (and, minimizing time, of its hours) and the relative gap of what it minimizes
    # ((value - bound) / value). 0 and None: proven optimal.
    gap: float = 0.0
    lower_bound_usd: float | None = None
    lower_bound_hours: float | None = None
    stats: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def compute_usd(self) -> float:
        return sum(p.compute_usd for p in self.stages.values())

    @property
    def egress_usd(self) -> float:
        return sum(e.usd for e in self.egress)

    @property
    def saving_usd(self) -> float | None:
        """Against the baseline (all on one cloud, on demand, reusing the same cached outputs)."""
        return None if self.baseline_usd is None else self.baseline_usd - self.total_usd

    @property
    def cached_saving_usd(self) -> float | None:
        """What reusing cached outputs saves, apart from where the stages run."""
        return None if self.recompute_usd is None else self.recompute_usd - self.total_usd

    def placement(self, stage: str) -> Placement:
        """Where ``stage`` runs; a stage the plan does not name runs on this machine."""
        return self.stages.get(stage) or LOCAL_PLACEMENT

    def with_stores(self, store_of: Callable[[Placement], str | None]) -> Plan:
        """The same plan with each placement's artifact store attached (resolved at the edge)."""
        stages = {name: replace(p, store_uri=store_of(p)) for name, p in self.stages.items()}
        return replace(self, stages=stages)

    def to_json(self) -> dict[str, Any]:
        """Plain data (money to 1/100 cent, hours to 4 decimals); `from_json` reads it back."""
        out: dict[str, Any] = {
            "pipeline": self.pipeline, "objective": self.objective, "total_usd": _usd(self.total_usd),
            "total_hours": round(self.total_hours, 4),
            "stages": {name: p.to_json() for name, p in self.stages.items()},
            "egress": [e.to_json() for e in self.egress],
        }
        if self.baseline_usd is not None:
            out["baseline"] = {"usd": _usd(self.baseline_usd), "cloud": self.baseline_cloud}
        if self.recompute_usd is not None:
            out["recompute_usd"] = _usd(self.recompute_usd)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.solver:
            out["solver"] = self.solver
        if self.gap > 0:  # absent when proven optimal, so such plans read as before
            out["gap"] = round(self.gap, 6)
            if self.lower_bound_usd is not None:
                out["lower_bound_usd"] = _usd(self.lower_bound_usd)
            if self.lower_bound_hours is not None:
                out["lower_bound_hours"] = round(self.lower_bound_hours, 4)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """The plan `to_json` wrote, e.g. read back from the state DB to resume a run."""
        try:
            baseline = data.get("baseline") or {}
            return cls(
                pipeline=str(data.get("pipeline", "")), objective=str(data.get("objective", "cost")),
                stages={str(n): Placement.from_json(p) for n, p in (data.get("stages") or {}).items()},
                egress=tuple(EgressCharge.from_json(e) for e in data.get("egress") or ()),
                total_usd=float(data.get("total_usd", 0.0)), total_hours=float(data.get("total_hours", 0.0)),
                baseline_usd=None if baseline.get("usd") is None else float(baseline["usd"]),
                baseline_cloud=_opt_str(baseline.get("cloud")),
                warnings=tuple(str(w) for w in data.get("warnings") or ()), solver=str(data.get("solver", "")),
                recompute_usd=_opt_float(data.get("recompute_usd")), gap=float(data.get("gap") or 0.0),
                lower_bound_usd=_opt_float(data.get("lower_bound_usd")),
                lower_bound_hours=_opt_float(data.get("lower_bound_hours")))
        except (AttributeError, TypeError, ValueError) as exc:
            raise PlanningError(f"not a plan: {exc}") from exc


@dataclass(frozen=True)
class Alternative:
    """Another placement for one stage, the rest of the plan held fixed, and what it would change."""

    placement: Placement
    total_usd: float
    delta_usd: float
    delta_compute_usd: float
    delta_egress_usd: float
    delta_hours: float

    @property
    def reason(self) -> str:
        parts = [f"{_signed(self.delta_compute_usd)} compute", f"{_signed(self.delta_egress_usd)} egress"]
        if abs(self.delta_hours) > 1e-9:
            parts.append(f"{self.delta_hours:+.2f} h")
        return ", ".join(parts)


def forced_plan(pipeline: ResolvedPipeline, infra: str) -> Plan:
    """Every stage on ``infra``, unpriced: what a dry run shows for a cluster or pool forced with --infra,
    where no configuration (and so no price) may exist yet. Each stage keeps its first alternative."""
    cloud = infra.split("/", 1)[0]
    placements = {}
    for name in pipeline.order:
        stage = pipeline.stages[name]
        res = stage.resources.alternatives()[0]
        placements[name] = Placement(
            infra=infra, cloud=cloud, region=None, zone=None, instance_type="",
            accelerators={a.name: a.count for a in res.accelerators[:1]}, use_spot=res.use_spot,
            num_nodes=stage.num_nodes, hourly_usd=0.0, hours=0.0, disk_size_gb=res.disk_size)
    return Plan(pipeline=pipeline.name, objective="cost", stages=placements, egress=(), total_usd=0.0,
                total_hours=0.0, solver="forced")


def _hours_source(value: Any) -> HoursSource:
    """A stored source, or "estimate" for plans written before sources were kept."""
    return cast(HoursSource, value) if value in get_args(HoursSource) else "estimate"


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _signed(usd: float) -> str:
    return f"{'+' if usd >= 0 else '-'}${abs(usd):,.2f}"


def _usd(value: float) -> float:
    return round(value, 4)


LOCAL_PLACEMENT = Placement(infra="local", cloud="local", region=None, zone=None, instance_type="local",
                            accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0)
