"""A SkyPilot task config (the dict `sky.Task.from_yaml_config` takes) for a stage pinned to its placement.

skyflow plans; SkyPilot provisions. The task names exactly the cloud, region, zone, instance type,
accelerators and spot choice the planner made, and runs the stage wrapper, which moves artifacts.
Its ``setup`` installs skyflow's code package on each node (a file mount SkyPilot uploads, or signed
URLs) and its ``run`` starts the wrapper with the interpreter that package was installed into.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.code_package import CodePackage, bootstrap_script, node_command
from skyflow.backends.base import StageLaunch
from skyflow.backends.remote_stage import SPEC_ENV, WRAPPER_MODULE

if TYPE_CHECKING:
    from skyflow.planner.plan import Placement
    from skyflow.spec.models import Service, Stage

# Where the file mount puts a code package's wheels on each node.
CODE_DIR = "~/.skyflow/code"


@dataclass(frozen=True)
class NodeSetup:
    """How a node gets skyflow before the wrapper runs: the task's setup, run and file mounts."""

    setup: str | None
    run: str
    file_mounts: Mapping[str, str] = field(default_factory=dict)


def code_package_setup(package: CodePackage, python: str = "python3", urls: Mapping[str, str] | None = None
                       ) -> NodeSetup:
    """Install ``package`` in setup and run the wrapper with its interpreter.

    Without ``urls`` the package's directory on this machine is a file mount (SkyPilot uploads it,
    whatever the store); with them (see ``presign_code_package``) each node downloads the wheels.
    """
    if urls is not None:
        setup = bootstrap_script(package, fetch="url", urls=urls, python=python)
        return NodeSetup(setup, node_command(package, fetch="url", urls=urls, python=python))
    remote = f"{CODE_DIR}/{package.digest}"
    return NodeSetup(bootstrap_script(package, fetch="dir", directory=remote, python=python),
                     node_command(package, fetch="dir", directory=remote, python=python),
                     {remote: str(package.directory)})


def own_install_setup(install: str, python: str = "python3") -> NodeSetup:
    """The user's own setup (e.g. nothing on an image that has skyflow), then the wrapper."""
    return NodeSetup(install or None, f"{python} -m {WRAPPER_MODULE}")


def task_name(run_id: str, stage: str, attempt: int) -> str:
    digest = hashlib.sha256(f"{run_id}/{stage}/{attempt}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")[:30] or "stage"
    return f"sf-{stem}-{digest}"


def _infra(placement: Placement) -> str | None:
    cloud = placement.cloud or placement.infra.split("/")[0] or None
    if not cloud:
        return None
    parts = [cloud]
    for part in (placement.region, placement.zone):
        if not part:
            break
        parts.append(part)
    return "/".join(parts)


def _accelerators(placement: Placement) -> str | None:
    if not placement.accelerators:
        return None
    name, count = next(iter(placement.accelerators.items()))
    return f"{name}:{float(count):g}"


def task_resources(placement: Placement, stage_spec: Stage) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    infra = _infra(placement)
    if infra:
        resources["infra"] = infra
    if placement.instance_type:
        resources["instance_type"] = placement.instance_type
    accelerators = _accelerators(placement)
    if accelerators:
        resources["accelerators"] = accelerators
    resources["use_spot"] = placement.use_spot
    spec = stage_spec.resources
    disk = placement.disk_size_gb or spec.disk_size
    if disk:
        resources["disk_size"] = int(disk)
    if spec.disk_tier:
        resources["disk_tier"] = spec.disk_tier
    ports = list(spec.ports)
    service = stage_spec.service
    if service is not None and service.ports and str(service.ports) not in ports:
        ports.append(str(service.ports))
    if ports:
        resources["ports"] = ports
    if spec.image_id is not None:
        resources["image_id"] = spec.image_id
    recovery = spec.job_recovery
    if resources["use_spot"] and recovery is not None:
        resources["job_recovery"] = {k: v for k, v in {"strategy": recovery.strategy,
                                                       "max_restarts_on_errors": recovery.max_restarts_on_errors
                                                       }.items() if v is not None}
    return resources


def service_section(service: Service) -> dict[str, Any]:
    probe = service.readiness_probe
    section: dict[str, Any] = {"readiness_probe": {"path": probe.path,
                                                   "initial_delay_seconds": int(probe.initial_delay_seconds),
                                                   "timeout_seconds": int(probe.timeout_seconds)}}
    if service.replica_policy is not None:
        policy = service.replica_policy
        section["replica_policy"] = {k: v for k, v in {
            "min_replicas": policy.min_replicas, "max_replicas": policy.max_replicas,
            "target_qps_per_replica": policy.target_qps_per_replica}.items() if v is not None}
    else:
        section["replicas"] = int(service.replicas or 1)
    return section


def task_config(launch: StageLaunch, node_spec: Mapping[str, Any], plain_env: Mapping[str, str],
                secret_names: tuple[str, ...], node: NodeSetup) -> dict[str, Any]:
    """The task for one attempt; secret values are attached at launch, never written here."""
    envs = {**plain_env, SPEC_ENV: json.dumps(dict(node_spec), sort_keys=True)}
    config: dict[str, Any] = {
        "name": task_name(launch.run_id, launch.stage, launch.attempt),
        "num_nodes": int(launch.num_nodes),
        "resources": task_resources(launch.placement, launch.spec),
        "envs": dict(sorted(envs.items())),
    }
    if node.file_mounts:
        config["file_mounts"] = dict(node.file_mounts)
    if node.setup:
        config["setup"] = node.setup
    config["run"] = node.run
    if secret_names:
        config["secrets"] = {name: None for name in sorted(secret_names)}
    if launch.spec.service is not None:
        config["service"] = service_section(launch.spec.service)
    return config


def wants_recovery(launch: StageLaunch) -> bool:
    """Managed jobs (with spot recovery) for spot placements; a plain cluster otherwise."""
    return launch.placement.use_spot
