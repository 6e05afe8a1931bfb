"""What the user asked for: the pipeline, its stages, inputs, outputs, stores and schedule."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from skyflow.spec.base import SpecModel, custom_error
from skyflow.spec.resources import Resources

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
Scalar = str | int | float | bool | None


def _checked_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise custom_error("bad_name", "a name must be letters, digits, '-' and '_'",
                           value=name, hint="Rename it, e.g. 'train_sft'.")
    return name


# A key of `stages:`, `inputs:` or `params:`: each key is checked on its own, so that every bad name
# in a pipeline is reported at once, at its own position.
Name = Annotated[str, AfterValidator(_checked_name)]


def parse_duration_s(value: Any, field: str) -> float | None:
    """Seconds from 3600, '90m', '2h', '1d'."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if not match or float(match.group(1)) <= 0:
        raise custom_error("bad_duration", "{field} must be a duration like 3600, '90m' or '2h', got {value!r}",
                           field=field, value=value, hint=f"Write {field}: 2h.")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _string_env(value: Any) -> Any:
    """SkyPilot lets env values be numbers or booleans; they reach the process as strings."""
    if isinstance(value, dict):
        return {k: (None if v is None else str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()}
    return value


REGISTERED_MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"


class OutputSpec(SpecModel):
    """A named artifact a stage writes (file or directory), its expected size, and what MLflow makes of it.

    `kind: model` logs the output as a model directory in the stage's MLflow run; `register: NAME`
    also makes it a version of that registered model. `metrics:` names a JSON file inside the output
    whose numbers become the stage run's metrics; `artifacts:` names files inside it (plots) logged
    into the stage run.
    """

    unknown_key_hints = {
        "model_name": "Write register: NAME (with kind: model).",
        "type": "Write kind: model (or kind: data, the default).",
        "plots": "List plots and other files under artifacts: [plot.png].",
        "metrics_file": "Write metrics: FILE.json.",
    }
    size_gb: float | None = Field(default=None, ge=0)
    description: str | None = None
    kind: Literal["data", "model"] = "data"
    # `register` in YAML; pydantic's BaseModel already has a `register` attribute.
    registered_model: str | None = Field(default=None, alias="register")
    metrics: str | None = None
    artifacts: tuple[str, ...] = ()

    @field_validator("registered_model")
    @classmethod
    def _register(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("kind") != "model":
            raise custom_error("register_needs_model", "register needs kind: model on this output, got "
                               "register: {value!r} on a data output", value=value,
                               hint="Add kind: model to this output, or drop register.")
        if not re.fullmatch(REGISTERED_MODEL_PATTERN, value):
            raise custom_error("bad_model_name", "a registered model name is letters, digits, '.', '_' and '-', "
                               "got {value!r}", value=value, hint="Write register: rlhf-policy.")
        return value

    @field_validator("artifacts", mode="before")
    @classmethod
    def _one_artifact(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("metrics")
    @classmethod
    def _metrics_path(cls, value: str | None) -> str | None:
        return None if value is None else _inside_output(value, "metrics")

    @field_validator("artifacts")
    @classmethod
    def _artifact_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_inside_output(path, "artifacts") for path in value)


def _inside_output(path: str, field: str) -> str:
    """A path relative to the output's folder that stays inside it."""
    parts = path.replace("\\", "/").split("/")
    if not path.strip() or path.startswith(("/", "~")) or ".." in parts:
        raise custom_error("bad_output_path", "{field} {names} inside the output's folder, got {value!r}",
                           field=field, value=path, names="names a file" if field == "metrics" else "lists files",
                           hint=f"Write {field}: {'report.json' if field == 'metrics' else '[plot.png]'}, a file "
                           "the stage writes into this output.")
    return path.strip("/")


class Estimate(SpecModel):
    """Expected run time, per accelerator name, ``local`` (on this machine, e.g. a demo size) and
    ``default`` (anything not named), or one number for all."""

    hours: dict[str, float] = Field(default_factory=dict)

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"default": value}
        if isinstance(value, dict):
            from skyflow.matching import close_matches
            from skyflow.spec.accelerators import canonical_accelerator, known_accelerators

            out = {}
            for key, hours in value.items():
                word = str(key).lower()
                name = word if word in ("default", "local") else canonical_accelerator(str(key))
                if name is None:
                    raise custom_error("unknown_accelerator", "estimate names no such accelerator {value!r}",
                                       value=key, matches=close_matches(str(key), known_accelerators()),
                                       hint="Use accelerator names, 'local' (this machine) or 'default'.")
                out[name] = hours
            return out
        return value

    @field_validator("hours")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for key, hours in value.items():
            if hours <= 0:
                raise custom_error("bad_estimate", "estimate for {key} must be positive hours, got {value!r}",
                                   key=key, value=hours, hint="Write estimate: {hours: 10}.")
        return value


class Sync(SpecModel):
    """Incremental sync of an input directory: only files whose digest changed move."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    mode: Literal["incremental", "full"] = "incremental"


class StorageMount(SpecModel):
    """A SkyPilot storage mount: a bucket (name and/or source) mounted or copied to a path."""

    unknown_key_hints = {
        "encryption": "skyflow does not set bucket encryption; enable default encryption "
        "(SSE-KMS, CMEK) on the bucket itself and drop this key.",
    }
    name: str | None = None
    source: str | list[str] | None = None
    store: Literal["s3", "gcs", "azure", "r2", "ibm", "oci", "nebius"] | None = None
    mode: Literal["MOUNT", "COPY", "MOUNT_CACHED"] = "MOUNT"
    persistent: bool = True
    config: dict[str, Any] | None = None


class ReadinessProbe(SpecModel):
    path: str = "/"
    initial_delay_seconds: float = Field(default=1200, ge=0)
    timeout_seconds: float = Field(default=15, gt=0)
    post_data: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None


class ReplicaPolicy(SpecModel):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    target_qps_per_replica: float | None = Field(default=None, gt=0)
    upscale_delay_seconds: float | None = None
    downscale_delay_seconds: float | None = None
    base_ondemand_fallback_replicas: int | None = None
    dynamic_ondemand_fallback: bool | None = None


class Service(SpecModel):
    """A long-running stage: ready when its probe answers; the pipeline then finishes."""

    readiness_probe: ReadinessProbe = Field(default_factory=ReadinessProbe)
    replicas: int | None = Field(default=None, ge=1)
    replica_policy: ReplicaPolicy | None = None
    ports: int | None = Field(default=None, ge=1, le=65535)
    load_balancing_policy: str | None = None
    tls: dict[str, str] | None = None

    @field_validator("readiness_probe", mode="before")
    @classmethod
    def _probe(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def replica_count(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return self.replica_policy.min_replicas if self.replica_policy else 1


class Stage(SpecModel):
    """One stage: a SkyPilot task (same fields, same meaning) plus named inputs and outputs."""

    unknown_key_hints = {
        "networking": "SkyPilot sets VPCs and security groups in its config, not in a task: write "
        "config: {aws: {vpc_name: ..., security_group_name: ...}} on the stage.",
        "depends": "Use depends_on: [stage, ...].",
        "dependencies": "Use depends_on: [stage, ...].",
        "command": "Use run: '...'.",
        "script": "Use run: '...'.",
        "env": "The field is envs: {KEY: value}.",
        "environment": "The field is envs: {KEY: value}.",
        "nodes": "Use num_nodes: 2.",
        "accelerators": "accelerators belongs under resources: {accelerators: A100:8}.",
        "use_spot": "use_spot belongs under resources: {use_spot: true}.",
        "cloud": "cloud belongs under resources: {cloud: aws} (or resources: {infra: aws}).",
        "infra": "infra belongs under resources: {infra: aws/us-east-1}.",
        "retry": "Use retries: 2.",
        "storage_mounts": "Write storage mounts under file_mounts (SkyPilot's current form).",
    }

    name: str | None = None
    task: str | None = None
    resources: Resources = Field(default_factory=Resources)
    num_nodes: int = Field(default=1, ge=1)
    workdir: str | dict[str, str] | None = None
    setup: str | None = None
    run: str | None = None
    envs: dict[str, str | None] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(default_factory=dict)
    file_mounts: dict[str, str | StorageMount] = Field(default_factory=dict)
    volumes: dict[str, str] | None = None
    service: Service | None = None
    config: dict[str, Any] | None = None
    sync: Sync | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, OutputSpec] = Field(default_factory=dict)
    estimate: Estimate = Field(default_factory=Estimate)
    retries: int = Field(default=0, ge=0, le=100)
    cache: bool = True
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None

    @field_validator("envs", mode="before")
    @classmethod
    def _envs(cls, value: Any) -> Any:
        return _string_env(value)

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(name): None for name in value}
        return _string_env(value)

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(name): {} for name in value}
        if isinstance(value, dict):
            return {k: ({} if v is None else {"size_gb": v} if isinstance(v, (int, float))
                        and not isinstance(v, bool) else v) for k, v in value.items()}
        return value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("estimate", mode="before")
    @classmethod
    def _estimate(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"hours": value}
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return parse_duration_s(value, "timeout")

    @field_validator("inputs", "outputs")
    @classmethod
    def _artifact_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise custom_error(
                    "bad_name", "artifact name {value!r} must be letters, digits and '_' (it becomes "
                    "the variable SKYFLOW_INPUT_/OUTPUT_<NAME>)", value=name, hint="Rename it, e.g. 'model'.")
        return value

    @model_validator(mode="after")
    def _runnable(self) -> Stage:
        if self.run is None and self.service is None and self.task is None:
            raise custom_error("no_run", "stage has nothing to run", hint="Add run: 'python train.py' "
                               "(or task: path/to/task.yaml).")
        return self


class ExternalInput(SpecModel):
    """Data that exists before the pipeline runs: where it lives and how big it is."""

    uri: str
    infra: str | None = None
    size_gb: float | None = Field(default=None, ge=0)

    @field_validator("infra", mode="before")
    @classmethod
    def _infra(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "local":
            return Resources.model_validate({"infra": value}).infra
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_uri(cls, data: Any) -> Any:
        return {"uri": data} if isinstance(data, str) else data


class Store(SpecModel):
    """Where artifacts of stages placed in a cloud or region are kept."""

    uri: str
    create: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_uri(cls, data: Any) -> Any:
        return {"uri": data} if isinstance(data, str) else data


class Schedule(SpecModel):
    """When to rerun: a cron line, data changes, or both."""

    cron: str | None = None
    timezone: str = "UTC"
    on_change: tuple[str, ...] = ()
    concurrency: Literal["forbid", "allow", "replace"] = "forbid"
    catchup: Literal["latest", "all", "none"] = "latest"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from croniter import croniter

        if not croniter.is_valid(value):
            raise custom_error("bad_cron", "not a valid cron expression: {value!r}", value=value,
                               hint="Five fields: minute hour day-of-month month day-of-week, "
                               "e.g. '0 3 * * 1' (Mondays 03:00).")
        # Well-formed but never due (February 30th): a fixed start keeps this free of the clock.
        from datetime import UTC, datetime

        from croniter import CroniterBadDateError

        try:
            croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(float)
        except CroniterBadDateError:
            raise custom_error("bad_cron", "cron expression {value!r} never fires", value=value,
                               hint="Check the day of month against the month, e.g. '0 3 28 2 *'.") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, available_timezones

        try:
            ZoneInfo(value)
        except (KeyError, ValueError, OSError):
            from skyflow.matching import close_matches

            raise custom_error("bad_timezone", "unknown timezone {value!r}", value=value,
                               matches=close_matches(value, available_timezones()),
                               hint="Use an IANA name like 'UTC' or 'Europe/Berlin'.") from None
        return value

    @field_validator("on_change", mode="before")
    @classmethod
    def _on_change(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_trigger(self) -> Schedule:
        if self.cron is None and not self.on_change:
            raise custom_error("no_trigger", "schedule has no trigger",
                               hint="Add cron: '0 3 * * 1' and/or on_change: [input].")
        return self


class PipelineSpec(SpecModel):
    """A whole pipeline as written in YAML or built by the decorators."""

    unknown_key_hints = {
        "tasks": "Stages go under stages: {name: {...}}.",
        "steps": "Stages go under stages: {name: {...}}.",
        "env": "The field is envs: {KEY: value}.",
        "parameters": "The field is params: {name: default}.",
        "resources": "resources belong to each stage: stages: {NAME: {resources: {...}}}.",
        "run": "run belongs to each stage: stages: {NAME: {run: ...}}.",
    }

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    description: str | None = None
    params: dict[Name, Any] = Field(default_factory=dict)
    envs: dict[str, str | None] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    stores: dict[str, Store] = Field(default_factory=dict)
    inputs: dict[Name, ExternalInput] = Field(default_factory=dict)
    stages: dict[Name, Stage] = Field(min_length=1)
    schedule: Schedule | None = None

    @field_validator("envs", mode="before")
    @classmethod
    def _envs(cls, value: Any) -> Any:
        return _string_env(value)

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> Any:
        if isinstance(value, dict):
            raise custom_error("secret_values", "pipeline secrets list names only, not values",
                               hint="Write secrets: [HF_TOKEN]; the value comes from your environment "
                               "when the pipeline runs.")
        return value
