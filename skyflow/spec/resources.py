"""SkyPilot's resources fields, parsed into exact, normalized values."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from skyflow.matching import close_matches
from skyflow.spec.accelerators import canonical_accelerator, known_accelerators
from skyflow.spec.base import SpecModel, custom_error

CLOUDS: tuple[str, ...] = (
    "aws", "gcp", "azure", "lambda", "runpod", "oci", "ibm", "scp", "vast", "fluidstack",
    "paperspace", "cudo", "do", "nebius", "hyperbolic", "seeweb", "primeintellect", "vsphere",
    "kubernetes", "ssh", "ray", "slurm", "local",
)
CLOUD_ALIASES = {"k8s": "kubernetes", "lambdalabs": "lambda", "digitalocean": "do"}
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x86": "x86_64", "arm64": "arm64", "aarch64": "arm64",
                 "arm": "arm64", "any": "any"}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(\+|x)?\s*$")


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    return custom_error(kind, message, **ctx)


def canonical_cloud(name: str) -> str:
    lowered = name.strip().lower()
    lowered = CLOUD_ALIASES.get(lowered, lowered)
    if lowered not in CLOUDS:
        raise _fail(
            "unknown_cloud", "unknown cloud {value!r}",
            value=name, matches=close_matches(name, CLOUDS),
            hint=f"Known: {', '.join(CLOUDS)}.",
        )
    return lowered


class Quantity(BaseModel):
    """'8' exactly, '8+' at least; memory may also be '4x' (GiB per vCPU)."""

    model_config = ConfigDict(frozen=True)
    amount: float
    at_least: bool = False
    per_cpu: bool = False

    def satisfied_by(self, offered: float, cpus: float = 0.0) -> bool:
        want = self.amount * cpus if self.per_cpu else self.amount
        return offered >= want if self.at_least or self.per_cpu else abs(offered - want) < 1e-9

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        return amount + ("+" if self.at_least else "x" if self.per_cpu else "")


def parse_quantity(value: Any, field: str) -> Quantity | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail("bad_quantity", "{field} must be a number like 8 or '8+', got {value!r}",
                    field=field, value=value, hint=f"Write {field}: 8 or {field}: '8+'.")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise _fail("bad_quantity", "{field} must be positive, got {value!r}", field=field, value=value)
        return Quantity(amount=float(value))
    match = _QUANTITY.match(str(value))
    if not match or (match.group(2) == "x" and field != "memory"):
        raise _fail("bad_quantity", "{field} must be a number like 8 or '8+', got {value!r}",
                    field=field, value=value,
                    hint=f"Write {field}: 8 (exactly) or {field}: '8+' (at least).")
    amount = float(match.group(1))
    if amount <= 0:
        raise _fail("bad_quantity", "{field} must be positive, got {value!r}", field=field, value=value)
    return Quantity(amount=amount, at_least=match.group(2) == "+", per_cpu=match.group(2) == "x")


class Accelerator(BaseModel):
    """One accelerator request: canonical name and count (fractions share a device)."""

    model_config = ConfigDict(frozen=True)
    name: str
    count: float

    def __str__(self) -> str:
        return f"{self.name}:{self.count:g}"


def _accelerator(name: Any, count: Any) -> Accelerator:
    text = str(name).strip()
    canonical = canonical_accelerator(text)
    if canonical is None:
        raise _fail(
            "unknown_accelerator", "no such accelerator {value!r}",
            value=text, matches=close_matches(text, known_accelerators()),
            hint="Run `skyflow catalog gpus` to list them.",
        )
    try:
        amount = float(count)
    except (TypeError, ValueError):
        raise _fail("bad_accelerator_count", "accelerator count must be a number, got {value!r}",
                    value=count, hint=f"Write {canonical}:8.") from None
    if amount <= 0 or (amount > 1 and not amount.is_integer()):
        raise _fail("bad_accelerator_count",
                    "accelerator count must be a whole number or a fraction below 1, got {value!r}",
                    value=count, hint=f"Write {canonical}:1 or {canonical}:0.25.")
    return Accelerator(name=canonical, count=amount)


def parse_accelerators(value: Any) -> tuple[Accelerator, ...]:
    """'A100:8' | {A100: 8} | ['A100:8', 'H100:8'] | {A100: 8, H100: 8} -> alternatives."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[tuple[Any, Any]] = []
        for part in value.split(","):
            name, _, count = part.strip().partition(":")
            items.append((name, count or 1))
    elif isinstance(value, dict):
        items = [(k, 1 if v is None else v) for k, v in value.items()]
    elif isinstance(value, list):
        return tuple(acc for item in value for acc in parse_accelerators(item))
    else:
        raise _fail("bad_accelerators", "accelerators must be 'NAME:COUNT', got {value!r}",
                    value=value, hint="Write accelerators: A100:8.")
    if not items or any(not str(n).strip() for n, _ in items):
        raise _fail("bad_accelerators", "accelerators must be 'NAME:COUNT', got {value!r}",
                    value=value, hint="Write accelerators: A100:8.")
    return tuple(_accelerator(n, c) for n, c in items)


class JobRecovery(SpecModel):
    """What to do when a spot instance is preempted or the job fails."""

    strategy: Literal["FAILOVER", "EAGER_NEXT_REGION", "NONE"] | None = "EAGER_NEXT_REGION"
    max_restarts_on_errors: int = Field(default=0, ge=0)
    recover_on_exit_codes: tuple[int, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            lowered = data.strip().upper()
            return {"strategy": None if lowered in ("AUTO", "") else lowered}
        if isinstance(data, dict) and isinstance(data.get("strategy"), str):
            data = dict(data)
            upper = data["strategy"].upper()
            data["strategy"] = None if upper == "AUTO" else upper
        if isinstance(data, dict) and isinstance(data.get("recover_on_exit_codes"), int):
            data = {**data, "recover_on_exit_codes": [data["recover_on_exit_codes"]]}
        return data


class Resources(SpecModel):
    """A stage's resources, with SkyPilot's fields and meaning."""

    unknown_key_hints = {
        "gpus": "Use accelerators: A100:8.",
        "gpu": "Use accelerators: A100:1.",
        "accelerator": "The field is accelerators (plural): accelerators: A100:8.",
        "spot": "Use use_spot: true.",
        "provider": "Use infra: aws (or cloud: aws).",
        "num_nodes": "num_nodes belongs to the stage, not its resources.",
        "disk": "Use disk_size: 256 (GB).",
        "memory_gb": "Use memory: 64 (GiB) or memory: '64+'.",
        "vcpus": "Use cpus: 8 or cpus: '8+'.",
        "arch": "Use cpu_arch: arm64 (or x86_64, any).",
    }

    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    accelerators: tuple[Accelerator, ...] = ()
    accelerator_args: dict[str, Any] | None = None
    cpus: Quantity | None = None
    memory: Quantity | None = None
    instance_type: str | None = None
    # CPU architecture to plan on; None is x86_64 unless the hardware asked for exists only on Arm.
    cpu_arch: Literal["x86_64", "arm64", "any"] | None = None
    use_spot: bool = False
    job_recovery: JobRecovery | None = None
    disk_size: int | None = Field(default=None, gt=0)
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    network_tier: Literal["standard", "best"] | None = None
    ports: tuple[str, ...] = ()
    image_id: str | dict[str, str] | None = None
    labels: dict[str, str] | None = None
    autostop: bool | int | str | dict[str, Any] | None = None
    priority: int | None = Field(default=None, ge=0, le=1000)
    any_of: tuple[Resources, ...] = ()
    ordered: tuple[Resources, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "spot_recovery" in data:
            if "job_recovery" in data:
                raise _fail("conflict", "give job_recovery or its older spelling spot_recovery, not both",
                            hint="Keep job_recovery.")
            data["job_recovery"] = data.pop("spot_recovery")
        if data.get("infra") is not None and any(data.get(k) is not None for k in ("cloud", "region", "zone")):
            raise _fail("conflict", "give infra or cloud/region/zone, not both",
                        hint="Write infra: aws/us-east-1 alone.")
        if data.get("any_of") and data.get("ordered"):
            raise _fail("conflict", "give any_of or ordered, not both", hint="Keep one list of alternatives.")
        return data

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accelerators(cls, value: Any) -> tuple[Accelerator, ...]:
        return parse_accelerators(value)

    @field_validator("cpus", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: Any) -> Quantity | None:
        return parse_quantity(value, info.field_name)

    @field_validator("cpu_arch", mode="before")
    @classmethod
    def _cpu_arch(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        lowered = value.strip().lower()
        found = _ARCH_ALIASES.get(lowered)
        if found is None:
            raise _fail("bad_cpu_arch", "cpu_arch must be x86_64, arm64 or any, got {value!r}", value=value,
                        matches=close_matches(lowered, _ARCH_ALIASES),
                        hint="Write cpu_arch: arm64 to plan on Arm machines (Graviton, Ampere, Axion).")
        return found

    @field_validator("cloud", mode="before")
    @classmethod
    def _cloud(cls, value: Any) -> Any:
        return canonical_cloud(value) if isinstance(value, str) else value

    @field_validator("infra", mode="before")
    @classmethod
    def _infra(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        head, sep, rest = value.strip().partition("/")
        if head in ("*", ""):
            return value.strip()
        return canonical_cloud(head) + (sep + rest if sep else "")

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            text = str(item).strip()
            if isinstance(item, bool) or not re.fullmatch(r"\d{1,5}(-\d{1,5})?", text):
                raise _fail("bad_port", "ports must be numbers or ranges like 8000 or '10020-10040', got {value!r}",
                            value=item, hint="Write ports: 8000.")
            out.append(text)
        return tuple(out)

    @field_validator("disk_size", mode="before")
    @classmethod
    def _disk(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*(GB|G|GiB)?\s*", value, re.IGNORECASE)
            if not match:
                raise _fail("bad_disk", "disk_size must be a number of GB, got {value!r}",
                            value=value, hint="Write disk_size: 256.")
            return int(match.group(1))
        return value

    # -- derived views the planner uses ---------------------------------------------------
    def location(self) -> tuple[str | None, str | None, str | None]:
        """(cloud, region, zone) this resource is pinned to, from infra or the older fields."""
        if self.infra:
            parts = self.infra.split("/")
            cloud = None if parts[0] in ("*", "") else parts[0]
            if cloud in ("kubernetes", "ssh", "ray", "slurm"):
                return cloud, "/".join(parts[1:]) or None, None
            return cloud, parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None
        return self.cloud, self.region, self.zone

    def alternatives(self) -> list[Resources]:
        """The concrete requests this resource stands for (any_of/ordered/accelerator lists)."""
        base = self.model_copy(update={"any_of": (), "ordered": ()})
        branches = [base.model_copy(update=_merge(base, alt)) for alt in (self.any_of or self.ordered)] or [base]
        out: list[Resources] = []
        for branch in branches:
            if len(branch.accelerators) > 1:
                out.extend(branch.model_copy(update={"accelerators": (acc,)}) for acc in branch.accelerators)
            else:
                out.append(branch)
        return out


def _merge(base: Resources, alt: Resources) -> dict[str, Any]:
    """Fields an any_of/ordered entry sets override the stage's own."""
    return {name: getattr(alt, name) for name in alt.model_fields_set}


__all__ = ["CLOUDS", "Accelerator", "JobRecovery", "Quantity", "Resources", "canonical_cloud",
           "parse_accelerators", "parse_quantity"]
