"""Every manifest the Kubernetes backend would create, for every stage in examples/ and the seed tasks,
is valid against the Kubernetes API schema (kubernetes-validate, strict)."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from backend_launches import STORE, all_launches

from skyflow.backends.kubernetes import KubernetesBackend
from skyflow.backends.kubernetes_manifests import GKE_ACCELERATOR_KEY, KARPENTER_ACCELERATOR_KEY, dns_name
from skyflow.config import KubernetesConfig, KubernetesContext, SkyflowConfig

LAUNCHES = all_launches("kubernetes/gke", disk_size_gb=200)


def _backend(key: str = "nvidia.com/gpu.product") -> KubernetesBackend:
    ctx = KubernetesContext(namespace="ml", accelerator_label_key=key, image="ghcr.io/acme/skyflow:1")
    return KubernetesBackend(SkyflowConfig(kubernetes=KubernetesConfig(contexts={"gke": ctx})))


def test_the_stage_shapes_cover_multinode_gpu_spot_secrets_and_services() -> None:
    assert len(LAUNCHES) >= 12
    assert any(launch.num_nodes > 1 for launch in LAUNCHES)
    assert any(launch.placement.use_spot for launch in LAUNCHES)
    assert any(launch.spec.service is not None for launch in LAUNCHES)
    assert any(launch.placement.accelerators for launch in LAUNCHES)


@pytest.mark.parametrize("key", ["nvidia.com/gpu.product", GKE_ACCELERATOR_KEY, KARPENTER_ACCELERATOR_KEY])
@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda launch: f"{launch.stage}")
def test_every_manifest_validates(launch: object, key: str) -> None:
    docs = _backend(key).manifests(launch, STORE)  # type: ignore[arg-type]
    for doc in docs:
        kubernetes_validate.validate(json.loads(json.dumps(doc)), "1.30", strict=True)


@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda launch: f"{launch.stage}")
def test_secret_values_only_in_the_secret(launch: object) -> None:
    docs = _backend().manifests(launch, STORE)  # type: ignore[arg-type]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert [s["stringData"] for s in secrets] == [{"HF_TOKEN": "s3cr3t-value"}]
    for doc in docs:
        if doc["kind"] != "Secret":
            assert "s3cr3t-value" not in json.dumps(doc)
    assert "s3cr3t-value" not in _backend().render(launch)  # type: ignore[arg-type]


def test_multinode_stage_is_an_indexed_job_behind_a_headless_service() -> None:
    launch = next(x for x in LAUNCHES if x.num_nodes > 1 and x.placement.accelerators)
    docs = {d["kind"]: d for d in _backend(GKE_ACCELERATOR_KEY).manifests(launch, STORE)}
    job, svc = docs["Job"], docs["Service"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == launch.num_nodes
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SKYPILOT_HEAD_IP"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}.ml.svc.cluster.local"
    assert len(env["SKYPILOT_NODE_IPS"].split("\n")) == launch.num_nodes
    count = int(next(iter(launch.placement.accelerators.values())))
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == str(count) and limits["ephemeral-storage"] == "200Gi"
    assert pod["nodeSelector"][GKE_ACCELERATOR_KEY].startswith("nvidia-")
    assert pod["containers"][0]["image"] == "ghcr.io/acme/skyflow:1"


def test_spot_placement_selects_spot_nodes_with_the_platform_default_and_the_configured_one() -> None:
    launch = next(x for x in LAUNCHES if x.placement.use_spot)
    pod = _backend(KARPENTER_ACCELERATOR_KEY).manifests(launch, STORE)[-1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    gke = _backend(GKE_ACCELERATOR_KEY).manifests(launch, STORE)[-1]["spec"]["template"]["spec"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in gke["tolerations"]
    ctx = KubernetesContext(spot_node_selector={"pool": "spot"},
                            spot_tolerations=({"key": "spot", "operator": "Exists", "effect": "NoSchedule"},))
    own = KubernetesBackend(SkyflowConfig(kubernetes=KubernetesConfig(contexts={"gke": ctx})))
    pod = own.manifests(launch, STORE)[-1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["pool"] == "spot" and {"key": "spot", "operator": "Exists",
                                                        "effect": "NoSchedule"} in pod["tolerations"]


def test_service_stage_is_a_deployment_and_service_with_the_readiness_probe() -> None:
    launch = next(x for x in LAUNCHES if x.spec.service is not None)
    docs = {d["kind"]: d for d in _backend().manifests(launch, STORE)}
    deployment, service = docs["Deployment"], docs["Service"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == launch.spec.service.readiness_probe.path
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "Job" not in docs


def test_names_are_dns_labels_short_enough_for_indexed_pod_hostnames() -> None:
    name = dns_name("run-" + "x" * 80, "Stage_With_A_Very_Long_Name" * 3, "12")
    assert len(name) <= 52 and name == name.lower() and name[0].isalpha()
    assert dns_name("r", "s", "1") != dns_name("r", "s", "2")


def test_an_invalid_manifest_is_caught_by_the_validator() -> None:
    doc = _backend().manifests(LAUNCHES[0], STORE)[-1]
    doc["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": [1]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30", strict=True)
