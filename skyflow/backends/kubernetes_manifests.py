"""Kubernetes manifests for a stage: pure functions from a launch to Job, Service, Secret, Deployment dicts.

A batch stage is a ``batch/v1`` Job running the stage wrapper; ``num_nodes > 1`` makes it an Indexed
Job with a headless Service, so node ``i`` is ``<job>-<i>.<service>`` and node 0 is the head. A
service stage is a Deployment behind a ClusterIP Service. Secret values go in a Secret the pods read
through ``envFrom``; they never appear in the Job or Deployment.

Unless the image has skyflow, an init container (same image) installs skyflow's code package into
the pod's ``/skyflow`` volume from signed URLs and leaves the interpreter's path there; the stage
container then runs the wrapper with that interpreter.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.code_package import CodePackage, bootstrap_script
from skyflow.backends.base import StageLaunch
from skyflow.backends.remote_stage import SPEC_ENV, WRAPPER_MODULE
from skyflow.errors import BackendError
from skyflow.processes import attempt_token

if TYPE_CHECKING:
    from skyflow.planner.plan import Placement
    from skyflow.spec.models import Stage

MANAGED_BY = "skyflow"
# Every object an attempt creates carries its attempt's token: the runner records the attempt's log path
# before the launch, so a later runner can tell that attempt's objects from others of the same name (a
# run with the same id from another skyflow home) even when its runner died before recording their names.
ATTEMPT_ANNOTATION = "skyflow.dev/attempt"
GPU_RESOURCE = "nvidia.com/gpu"
STAGE_CONTAINER = "stage"
INSTALL_CONTAINER = "code-package"
# The pod's emptyDir: the wrapper's inputs, outputs and workdir, and the installed code package.
NODE_ROOT = "/skyflow"
NODE_ROOT_ENV = "SKYFLOW_NODE_ROOT"
CODE_ROOT = f"${NODE_ROOT_ENV}/.code"  # expanded in the pod, so the path follows the volume
# Node labels that name a GPU model, and each one's value for common models. GPU feature discovery
# (NVIDIA's GPU operator) is the default; GKE and Karpenter on EKS label nodes themselves.
GKE_ACCELERATOR_KEY = "cloud.google.com/gke-accelerator"
KARPENTER_ACCELERATOR_KEY = "karpenter.k8s.aws/instance-gpu-name"
EKS_ACCELERATOR_KEY = "k8s.amazonaws.com/accelerator"
ACCELERATOR_VALUES: dict[str, dict[str, str]] = {
    GKE_ACCELERATOR_KEY: {"A100": "nvidia-tesla-a100", "A100-80GB": "nvidia-a100-80gb", "H100": "nvidia-h100-80gb",
                          "H200": "nvidia-h200-141gb", "L4": "nvidia-l4", "T4": "nvidia-tesla-t4",
                          "V100": "nvidia-tesla-v100", "P100": "nvidia-tesla-p100"},
    KARPENTER_ACCELERATOR_KEY: {"A100": "a100", "A100-80GB": "a100", "H100": "h100", "H200": "h200", "L4": "l4",
                                "L40S": "l40s", "T4": "t4", "A10G": "a10g", "V100": "v100"},
    EKS_ACCELERATOR_KEY: {"A100": "nvidia-tesla-a100", "H100": "nvidia-h100", "T4": "nvidia-tesla-t4",
                          "V100": "nvidia-tesla-v100", "A10G": "nvidia-a10g", "L4": "nvidia-l4"},
    "nvidia.com/gpu.product": {"A100": "NVIDIA-A100-SXM4-40GB", "A100-80GB": "NVIDIA-A100-SXM4-80GB",
                               "H100": "NVIDIA-H100-80GB-HBM3", "H200": "NVIDIA-H200", "L4": "NVIDIA-L4",
                               "T4": "Tesla-T4", "A10G": "NVIDIA-A10G", "L40S": "NVIDIA-L40S"},
}
# Spot / preemptible nodes, by the platform the accelerator label points to.
SPOT_SELECTORS: dict[str, dict[str, str]] = {
    GKE_ACCELERATOR_KEY: {"cloud.google.com/gke-spot": "true"},
    KARPENTER_ACCELERATOR_KEY: {"karpenter.sh/capacity-type": "spot"},
    EKS_ACCELERATOR_KEY: {"eks.amazonaws.com/capacityType": "SPOT"},
}
SPOT_TOLERATIONS: dict[str, list[dict[str, Any]]] = {
    GKE_ACCELERATOR_KEY: [{"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                           "effect": "NoSchedule"}],
}


@dataclass(frozen=True)
class PodPlan:
    """What a stage's pods need besides its launch: cluster settings and the wrapper's inputs."""

    namespace: str
    image: str
    accelerator_label_key: str
    spot_node_selector: Mapping[str, str]
    spot_tolerations: tuple[Mapping[str, Any], ...]
    plain_env: Mapping[str, str]
    secret_names: tuple[str, ...]
    node_spec: Mapping[str, Any]
    command: tuple[str, ...] = ("python3", "-m", WRAPPER_MODULE)  # the stage container's
    install_command: tuple[str, ...] = ()  # the init container's; none when the image has skyflow
    store_secret: str | None = None  # a Secret of the user's with the store's credentials


def code_package_commands(package: CodePackage, urls: Mapping[str, str], python: str = "python3"
                          ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(init container, stage container) commands for an image without skyflow.

    The init container installs the package from ``urls`` into the pod's volume (or finds the image
    baked with it) and writes the interpreter's path there; the stage container runs the wrapper with it.
    """
    install = (bootstrap_script(package, fetch="url", urls=urls, python=python, env_root=CODE_ROOT)
               + f'mkdir -p "{CODE_ROOT}" && printf "%s\\n" "$SKYFLOW_PYTHON" > "{CODE_ROOT}/python"\n')
    run = (f'SKYFLOW_PYTHON=$(cat "{CODE_ROOT}/python") || exit\nexport SKYFLOW_PYTHON\n'
           f'exec "$SKYFLOW_PYTHON" -P -m {WRAPPER_MODULE}\n')
    return ("sh", "-c", install), ("sh", "-c", run)


def dns_name(*parts: str, limit: int = 52) -> str:
    """A DNS-1123 label from ``parts`` with a digest suffix, short enough for `<name>-<index>` pods."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts[1:2] or parts).lower()).strip("-")
    stem = stem[: limit - len(digest) - 4].strip("-") or "stage"
    return f"sf-{stem}-{digest}"


def labels(run_id: str, stage: str) -> dict[str, str]:
    def value(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.") or "x"

    return {"app.kubernetes.io/managed-by": MANAGED_BY, "skyflow.dev/run": value(run_id),
            "skyflow.dev/stage": value(stage)}


def accelerator_selector(key: str, accelerators: Mapping[str, Any]) -> dict[str, str]:
    if not accelerators:
        return {}
    name = next(iter(accelerators))
    return {key: ACCELERATOR_VALUES.get(key, {}).get(name, name)}


def _gpu_count(placement: Placement) -> int:
    accelerators = placement.accelerators
    return int(max(1, round(float(next(iter(accelerators.values()))))) if accelerators else 0)


def container_resources(stage_spec: Stage, placement: Placement) -> dict[str, Any]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    gpus = _gpu_count(placement)
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    resources = stage_spec.resources
    cpus = resources.cpus.amount if resources.cpus is not None else None
    memory = resources.memory.amount if resources.memory is not None else None
    if cpus:
        requests["cpu"] = f"{cpus:g}"
    if memory:
        requests["memory"] = f"{memory:g}Gi"
    disk = placement.disk_size_gb or resources.disk_size
    if disk:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = f"{int(disk)}Gi"
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _scheduling(plan: PodPlan, placement: Placement) -> dict[str, Any]:
    selector = accelerator_selector(plan.accelerator_label_key, placement.accelerators)
    tolerations: list[dict[str, Any]] = []
    if _gpu_count(placement):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if placement.use_spot:
        key = plan.accelerator_label_key
        selector.update(plan.spot_node_selector or SPOT_SELECTORS.get(key, {}))
        tolerations += [dict(t) for t in plan.spot_tolerations] or SPOT_TOLERATIONS.get(key, [])
    out: dict[str, Any] = {}
    if selector:
        out["nodeSelector"] = selector
    if tolerations:
        out["tolerations"] = tolerations
    return out


def _env(pairs: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(pairs.items())]


def _container(plan: PodPlan, launch: StageLaunch, secret: str | None, extra_env: Mapping[str, str],
               ports: tuple[int, ...] = ()) -> dict[str, Any]:
    env = {**plan.plain_env, **extra_env, SPEC_ENV: json.dumps(dict(plan.node_spec), sort_keys=True),
           NODE_ROOT_ENV: NODE_ROOT}
    mounts = [{"name": "skyflow", "mountPath": NODE_ROOT}]
    if _gpu_count(launch.placement):
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})  # NCCL and data loaders outgrow the 64 MiB default
    container: dict[str, Any] = {"name": STAGE_CONTAINER, "image": plan.image, "command": list(plan.command),
                                 "env": _env(env), "volumeMounts": mounts}
    # The stage's own secrets come last: a key in both takes the stage's value.
    sources = [name for name in (plan.store_secret, secret) if name]
    if sources:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in sources]
    resources = container_resources(launch.spec, launch.placement)
    if resources:
        container["resources"] = resources
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
    return container


def _pod(plan: PodPlan, launch: StageLaunch, container: dict[str, Any]) -> dict[str, Any]:
    """The pod spec around the stage container: its volumes, the install init container, scheduling."""
    volumes: list[dict[str, Any]] = [{"name": "skyflow", "emptyDir": {}}]
    if _gpu_count(launch.placement):
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    pod: dict[str, Any] = {}
    if plan.install_command:
        pod["initContainers"] = [{"name": INSTALL_CONTAINER, "image": plan.image,
                                  "command": list(plan.install_command), "env": _env({NODE_ROOT_ENV: NODE_ROOT}),
                                  "volumeMounts": [{"name": "skyflow", "mountPath": NODE_ROOT}]}]
    pod.update({"containers": [container], "volumes": volumes, **_scheduling(plan, launch.placement)})
    return pod


def secret_manifest(name: str, namespace: str, run_labels: Mapping[str, str],
                    values: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(run_labels)},
            "stringData": dict(values)}


def job_manifests(launch: StageLaunch, plan: PodPlan, secret_values: Mapping[str, str]) -> list[dict[str, Any]]:
    """[Secret], [headless Service], Job: everything one attempt of a batch stage creates, in order."""
    name = dns_name(launch.run_id, launch.stage, str(launch.attempt))
    run_labels = labels(launch.run_id, launch.stage)
    docs: list[dict[str, Any]] = []
    secret = name if secret_values else None
    if secret:
        docs.append(secret_manifest(name, plan.namespace, run_labels, secret_values))
    extra: dict[str, str] = {}
    job_spec: dict[str, Any] = {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600}
    nodes = int(launch.num_nodes)
    if nodes > 1:
        hosts = [f"{name}-{i}.{name}.{plan.namespace}.svc.cluster.local" for i in range(nodes)]
        extra = {"SKYPILOT_HEAD_IP": hosts[0], "SKYPILOT_NODE_IPS": "\n".join(hosts)}
        job_spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": plan.namespace, "labels": run_labels},
                     "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                              "selector": {"job-name": name}}})
    if launch.timeout_s:
        job_spec["activeDeadlineSeconds"] = int(launch.timeout_s)
    pod = {"restartPolicy": "Never", **({"subdomain": name} if nodes > 1 else {}),
           **_pod(plan, launch, _container(plan, launch, secret, extra))}
    job_spec["template"] = {"metadata": {"labels": run_labels}, "spec": pod}
    docs.append({"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": name, "namespace": plan.namespace, "labels": run_labels},
                 "spec": job_spec})
    return _stamped(docs, launch)


def service_port(stage_spec: Stage) -> int:
    service = stage_spec.service
    if service is not None and service.ports:
        return int(service.ports)
    ports = stage_spec.resources.ports
    first = str(ports[0]).split("-")[0] if ports else ""
    return int(first) if first.isdigit() else 8080


def service_manifests(launch: StageLaunch, plan: PodPlan, secret_values: Mapping[str, str]) -> list[dict[str, Any]]:
    """[Secret], Deployment, Service for a long-running service stage."""
    name = dns_name(launch.run_id, launch.stage, "svc")
    run_labels = labels(launch.run_id, launch.stage)
    spec = launch.spec.service
    if spec is None:
        raise BackendError(f"stage {launch.stage!r} has no service: section", stage=launch.stage)
    port = service_port(launch.spec)
    replicas = spec.replicas or (spec.replica_policy.min_replicas if spec.replica_policy else 1) or 1
    docs: list[dict[str, Any]] = []
    secret = name if secret_values else None
    if secret:
        docs.append(secret_manifest(name, plan.namespace, run_labels, secret_values))
    container = _container(plan, launch, secret, {"SKYFLOW_SERVICE_PORT": str(port)}, (port,))
    probe = spec.readiness_probe
    container["readinessProbe"] = {"httpGet": {"path": probe.path, "port": port},
                                   "timeoutSeconds": max(1, int(probe.timeout_seconds)), "periodSeconds": 10}
    selector = {**run_labels, "skyflow.dev/service": name}
    pod = _pod(plan, launch, container)
    docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": name, "namespace": plan.namespace, "labels": run_labels},
                 "spec": {"replicas": int(replicas), "selector": {"matchLabels": selector},
                          "template": {"metadata": {"labels": selector}, "spec": pod}}})
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": name, "namespace": plan.namespace, "labels": run_labels},
                 "spec": {"selector": selector, "ports": [{"port": port, "targetPort": port}]}})
    return _stamped(docs, launch)


def _stamped(docs: list[dict[str, Any]], launch: StageLaunch) -> list[dict[str, Any]]:
    token = attempt_token(launch.log_path)
    for doc in docs:
        doc["metadata"]["annotations"] = {**doc["metadata"].get("annotations", {}), ATTEMPT_ANNOTATION: token}
    return docs


def redacted(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests with Secret values replaced, for printing."""
    out = []
    for doc in docs:
        if doc.get("kind") == "Secret":
            doc = {**doc, "stringData": {k: "<redacted>" for k in doc.get("stringData", {})}}
        out.append(doc)
    return out
