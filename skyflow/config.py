"""The user's machine configuration ($SKYFLOW_HOME/config.yaml): SSH node pools, Kubernetes contexts, Ray clusters,
SkyPilot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from skyflow.errors import SpecError
from skyflow.spec.base import SpecModel, custom_error
from skyflow.spec.resources import parse_accelerators

_OUR_NAMES = frozenset({"skyflow", "skyflow-llmops"})
_ARCHIVES = (".whl", ".tar.gz", ".zip")
_OPTIONS_WITH_VALUES = frozenset({"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
                                  "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix", "--root",
                                  "--python", "-p"})
_REQUIREMENT_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([<>=!~].*)?")


def skyflow_by_name(setup: str) -> str | None:
    """The requirement in a shell ``setup`` that has pip (or uv pip) fetch skyflow by its project name, if any.

    A path, an archive or a direct reference (``name @ URL``) is exactly the code given; a bare name
    (``skyflow``, ``skyflow-llmops>=0.1``) is whatever an index serves under it."""
    try:
        words = shlex.split(setup, comments=True)
    except ValueError:
        words = setup.split()
    installing = False
    for index, word in enumerate(words):
        ends_command = word in ("&&", "||", ";", "|") or word.endswith(";")
        word = word.rstrip(";")
        if word == "install" and index and words[index - 1].rsplit("/", 1)[-1] in ("pip", "pip3"):
            installing = True
        elif (installing and not word.startswith("-") and words[index - 1] not in _OPTIONS_WITH_VALUES
              and (match := _REQUIREMENT_NAME.fullmatch(word))):
            direct = index + 1 < len(words) and words[index + 1].startswith("@")
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            if name in _OUR_NAMES and not direct and not word.endswith(_ARCHIVES):
                return word
        installing = installing and not ends_command
    return None


def _accelerator_counts(value: Any) -> Any:
    if value is None or (isinstance(value, dict) and all(isinstance(v, int) for v in value.values())):
        accs = parse_accelerators(value) if value else ()
        return {a.name: int(a.count) for a in accs}
    if isinstance(value, str):
        return {a.name: int(a.count) for a in parse_accelerators(value)}
    raise custom_error("bad_accelerators", "accelerators must map each name to a count (A100: 8), got {value!r}",
                       value=value, hint="Write accelerators: {A100: 8}.")


class SshPool(SpecModel):
    """Machines reachable over SSH that stages can run on (per host: cpus, memory, GPUs)."""

    hosts: tuple[str, ...] = Field(min_length=1)
    user: str | None = None
    identity_file: str | None = None
    accelerators: dict[str, int] = Field(default_factory=dict)
    cpus: float | None = Field(default=None, gt=0)
    memory_gb: float | None = Field(default=None, gt=0)
    hourly_usd: float = Field(default=0.0, ge=0)
    workdir_root: str = "~/.skyflow/remote"
    python: str = "python3"

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accs(cls, value: Any) -> Any:
        return _accelerator_counts(value)

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class KubernetesPricing(SpecModel):
    cpu_hourly_usd: float = Field(default=0.0, ge=0)
    memory_gb_hourly_usd: float = Field(default=0.0, ge=0)
    accelerators_hourly_usd: dict[str, float] = Field(default_factory=dict)


class KubernetesContext(SpecModel):
    """A kubeconfig context the planner may place stages in, with its prices and capacity."""

    namespace: str = "default"
    infra: str | None = None  # where the cluster lives (gcp/us-central1), for egress prices
    pricing: KubernetesPricing = Field(default_factory=KubernetesPricing)
    cpus: float | None = Field(default=None, gt=0)
    memory_gb: float | None = Field(default=None, gt=0)
    accelerators: dict[str, int] = Field(default_factory=dict)
    accelerator_label_key: str = "nvidia.com/gpu.product"
    spot_node_selector: dict[str, str] = Field(default_factory=dict)
    spot_tolerations: tuple[dict[str, Any], ...] = ()
    image: str = "python:3.11-slim"
    # True: `image` has skyflow installed, and pods run the stage wrapper with its `python` directly.
    # False: an init container installs skyflow's code package into the pod first (signed URLs).
    image_has_skyflow: bool = False
    python: str = "python3"  # the image's Python 3.11: runs the installer, or the wrapper when it has skyflow
    store_secret: str | None = None  # a Secret whose keys (the store's credentials) become the stage's env

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accs(cls, value: Any) -> Any:
        return _accelerator_counts(value)


class KubernetesConfig(SpecModel):
    kubeconfig: str | None = None
    contexts: dict[str, KubernetesContext] = Field(default_factory=dict)


class RayCluster(SpecModel):
    """A running Ray cluster that takes stages as Ray jobs, through its dashboard's Job Submission API.

    ``accelerators``, ``cpus`` and ``memory_gb`` describe one node; ``nodes`` how many there are;
    ``hourly_usd`` is what one node costs an hour (whole nodes, as for an SSH pool).
    """

    address: str  # the dashboard: http://HEAD:8265
    nodes: int = Field(default=1, ge=1)
    accelerators: dict[str, int] = Field(default_factory=dict)
    cpus: float | None = Field(default=None, gt=0)
    memory_gb: float | None = Field(default=None, gt=0)
    hourly_usd: float = Field(default=0.0, ge=0)
    infra: str | None = None  # where the cluster lives (aws/us-east-1), for egress prices and the store
    python: str = "python3"  # the nodes' Python 3.11: installs skyflow's code package, or runs the wrapper
    # True: the nodes' `python` has skyflow-llmops installed and runs the stage wrapper directly.
    # False: each job installs skyflow's code package (shipped as the job's working_dir) first.
    nodes_have_skyflow: bool = False
    env_root: str = "~/.skyflow/env"  # where a node keeps the code package's environments

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accs(cls, value: Any) -> Any:
        return _accelerator_counts(value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("http", "https") or not rest.strip("/"):
            raise custom_error("bad_ray_address", "a Ray cluster's address is its dashboard URL, got {value!r}",
                               value=value, hint="Write address: http://HEAD:8265.")
        return value.rstrip("/")


class SkyPilotConfig(SpecModel):
    """How SkyPilot nodes get skyflow: the code package (default), or the user's own install."""

    python: str = "python3"  # the node's Python 3.11 that installs and runs the code package
    code_fetch: Literal["dir", "url"] = "dir"  # dir: a file mount SkyPilot uploads; url: signed store URLs
    # A setup of your own instead of the code package (e.g. "" on an image that has skyflow); the
    # task then runs `<python> -m skyflow.backends.remote_stage`.
    install: str | None = None

    @field_validator("install")
    @classmethod
    def _install(cls, value: str | None) -> str | None:
        named = skyflow_by_name(value or "")
        if named is not None:
            raise custom_error(
                "skyflow_from_an_index",
                "skypilot.install pip-installs {named!r} by name: a package index holds other code under that "
                "name than the skyflow that plans the run", named=named,
                hint="Leave install out (nodes get this checkout's code package), install a wheel or path of "
                     "this checkout (pip install /wheels/skyflow_llmops-0.1.0-py3-none-any.whl), or use \"\" on an "
                     "image that has it.")
        return value


class LogsConfig(SpecModel):
    """Stage logs on this machine: each is rotated to `stage.log.1` once it passes this size."""

    max_stage_log_mb: float = Field(default=1024.0, gt=0)


class SkyflowConfig(SpecModel):
    ssh_pools: dict[str, SshPool] = Field(default_factory=dict)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    ray_clusters: dict[str, RayCluster] = Field(default_factory=dict)
    skypilot: SkyPilotConfig = Field(default_factory=SkyPilotConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    # `skyflow run` asks before launching a plan that costs this much or more (0: every plan asks;
    # null: none does); `-y` skips the question.
    confirm_cost_usd: float | None = Field(default=10.0, ge=0)


def load_config(path: Path) -> SkyflowConfig:
    """The config at ``path``; an absent file is an empty config, a wrong one a positioned error."""
    from skyflow.spec.diagnostics import issues_from_validation
    from skyflow.spec.loader import read_text
    from skyflow.spec.source import parse_yaml

    if not path.is_file():
        return SkyflowConfig()
    data, smap = parse_yaml(read_text(path), str(path))
    if data is None:
        return SkyflowConfig()
    try:
        return SkyflowConfig.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc, data, smap, SkyflowConfig)) from None
