"""Plan: where each stage runs, what it costs, and which artifacts move where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


    @property
    def compute_usd(self) -> float:
        return self.hourly_usd * self.num_nodes * self.hours

    def __hash__(self) -> int:
        return hash((self.infra, self.instance_type, tuple(self.accelerators.items()), self.use_spot,
                     self.hourly_usd, self.hours, self.cached))

    def to_json(self) -> dict[str, Any]:
        out = {
            "infra": self.infra, "cloud": self.cloud, "region": self.region, "zone": self.zone,
            "instance_type": self.instance_type,
            "accelerators": {k: int(v) if float(v).is_integer() else v for k, v in self.accelerators.items()},
            "use_spot": self.use_spot, "num_nodes": self.num_nodes, "hourly_usd": _usd(self.hourly_usd),
            "hours": round(self.hours, 4), "compute_usd": _usd(self.compute_usd),
        }
        if self.cached:
            out["cached"] = True
        return out


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
    stats: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def compute_usd(self) -> float:
        return sum(p.compute_usd for p in self.stages.values())

    @property
    def egress_usd(self) -> float:
        return sum(e.usd for e in self.egress)

    @property
    def saving_usd(self) -> float | None:
        return None if self.baseline_usd is None else self.baseline_usd - self.total_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "objective": self.objective, "total_usd": _usd(self.total_usd),
            "total_hours": round(self.total_hours, 4),
            "stages": {name: p.to_json() for name, p in self.stages.items()},
            "egress": [e.to_json() for e in self.egress],
        }


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


def _signed(usd: float) -> str:
    return f"{'+' if usd >= 0 else '-'}${abs(usd):,.2f}"


def _usd(value: float) -> float:
    return round(value, 4)
