"""Every manifest the Kubernetes backend would create, for every stage in examples/ and the seed tasks,
is valid against the Kubernetes API schema (kubernetes-validate, strict); and how pods get skyflow:
the init container that installs the code package, a stage's own image, /dev/shm, the store's Secret."""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from backend_launches import STORE, all_launches

from skyflow.backends.base import StageLaunch
from skyflow.backends.kubernetes import KubernetesBackend
from skyflow.backends.kubernetes_manifests import (
    ATTEMPT_ANNOTATION,
    GKE_ACCELERATOR_KEY,
    INSTALL_CONTAINER,
    KARPENTER_ACCELERATOR_KEY,
    code_package_commands,
    dns_name,
)
from skyflow.backends.remote_stage import code_package_for, placeholder_urls
from skyflow.config import KubernetesConfig, KubernetesContext, SkyflowConfig
from skyflow.errors import BackendError

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


@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda launch: f"{launch.stage}")
def test_every_object_carries_the_token_of_its_attempts_log_path(launch: StageLaunch, tmp_path: Path) -> None:
    """What lets a later runner tell this attempt's objects from another's of the same name."""
    from skyflow.processes import attempt_token

    docs = _backend().manifests(launch, STORE)
    assert {d["metadata"]["annotations"][ATTEMPT_ANNOTATION] for d in docs} == {attempt_token(launch.log_path)}
    other = _backend().manifests(replace(launch, log_path=tmp_path / "elsewhere" / "stage.log"), STORE)
    assert [d["metadata"]["name"] for d in other] == [d["metadata"]["name"] for d in docs]
    assert {d["metadata"]["annotations"][ATTEMPT_ANNOTATION] for d in other} != {attempt_token(launch.log_path)}


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
    assert launch.spec.service is not None
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


# -- how pods get skyflow -----------------------------------------------------------------------------

def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    workload = next(d for d in docs if d["kind"] in ("Job", "Deployment"))
    return dict(workload["spec"]["template"]["spec"])


def _own(**settings: Any) -> KubernetesBackend:
    ctx = KubernetesContext(namespace="ml", **settings)
    return KubernetesBackend(SkyflowConfig(kubernetes=KubernetesConfig(contexts={"gke": ctx})))


@pytest.mark.parametrize("launch", [LAUNCHES[0], next(x for x in LAUNCHES if x.spec.service is not None)],
                         ids=["job", "deployment"])
def test_an_image_without_skyflow_gets_an_init_container_that_installs_the_code_package(launch: StageLaunch) -> None:
    pod = _pod(_backend().manifests(launch, STORE))
    package = code_package_for(STORE)
    (init,) = pod["initContainers"]
    stage = pod["containers"][0]
    assert init["name"] == INSTALL_CONTAINER and init["image"] == stage["image"] == "ghcr.io/acme/skyflow:1"
    assert init["command"][:2] == ["sh", "-c"] and "python3 -I -c" in init["command"][2]
    config = _installer_config(init["command"][2])
    assert config["digest"] == package.digest and config["fetch"] == "url"
    assert config["env_root"] == "$SKYFLOW_NODE_ROOT/.code"  # expanded in the pod: the shared volume
    assert {f["name"] for f in config["files"]} == {f.name for f in package.files}
    assert {"name": "skyflow", "mountPath": "/skyflow"} in init["volumeMounts"]
    assert {"name": "SKYFLOW_NODE_ROOT", "value": "/skyflow"} in init["env"]
    assert '"--no-index"' in init["command"][2] and "skyflow[" not in json.dumps(pod)  # nothing from an index
    assert stage["command"][:2] == ["sh", "-c"]
    assert 'exec "$SKYFLOW_PYTHON" -P -m skyflow.backends.remote_stage' in stage["command"][2]
    assert "envFrom" not in init  # signed URLs: the install needs no credentials


def test_a_dry_run_shows_placeholders_where_a_launch_signs_urls() -> None:
    text = _backend().render(LAUNCHES[0])
    assert f"<signed at launch: {STORE}/code/wheels/" in text
    assert "SKYFLOW_PYTHON=$(python3 -I -c '\n" in text  # scripts as literal blocks, readable


def test_an_image_with_skyflow_runs_the_wrapper_with_its_python() -> None:
    pod = _pod(_own(image="ghcr.io/acme/skyflow:1", image_has_skyflow=True, python="/opt/venv/bin/python")
               .manifests(LAUNCHES[0], STORE))
    assert "initContainers" not in pod
    assert pod["containers"][0]["command"] == ["/opt/venv/bin/python", "-m", "skyflow.backends.remote_stage"]


def _with_image(launch: StageLaunch, image_id: Any) -> StageLaunch:
    resources = launch.spec.resources.model_copy(update={"image_id": image_id})
    return replace(launch, spec=launch.spec.model_copy(update={"resources": resources}))


def test_a_stages_own_image_is_used_and_taken_to_lack_skyflow() -> None:
    backend = _own(image="ghcr.io/acme/skyflow:1", image_has_skyflow=True)
    for image_id in ("docker:nvcr.io/nvidia/pytorch:24.05-py3", {"gke": "docker:nvcr.io/nvidia/pytorch:24.05-py3",
                                                                 "us-east-1": "ami-0123"}):
        docs = backend.manifests(_with_image(LAUNCHES[0], image_id), STORE)
        pod = _pod(docs)
        assert pod["containers"][0]["image"] == pod["initContainers"][0]["image"] == "nvcr.io/nvidia/pytorch:24.05-py3"
        for doc in docs:
            kubernetes_validate.validate(json.loads(json.dumps(doc)), "1.30", strict=True)
    other = _pod(backend.manifests(_with_image(LAUNCHES[0], {"us-east-1": "ami-0123"}), STORE))
    assert other["containers"][0]["image"] == "ghcr.io/acme/skyflow:1" and "initContainers" not in other
    with pytest.raises(BackendError, match=r"stage '.*' names image_id 'ami-0123'.*write `image_id: docker:IMAGE`"):
        backend.manifests(_with_image(LAUNCHES[0], "ami-0123"), STORE)


def test_gpu_pods_get_a_memory_backed_dev_shm_and_cpu_pods_do_not() -> None:
    gpu = next(x for x in LAUNCHES if x.placement.accelerators)
    cpu = next(x for x in LAUNCHES if not x.placement.accelerators and x.spec.service is None)
    pod = _pod(_backend().manifests(gpu, STORE))
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    plain = _pod(_backend().manifests(cpu, STORE))
    assert [v["name"] for v in plain["volumes"]] == ["skyflow"]


def test_the_store_secret_reaches_the_stage_container_before_the_stages_own_secrets() -> None:
    docs = _own(store_secret="s3-credentials").manifests(LAUNCHES[0], STORE)
    stage_secret = next(d for d in docs if d["kind"] == "Secret")["metadata"]["name"]
    pod = _pod(docs)
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}},
                                               {"secretRef": {"name": stage_secret}}]
    assert "envFrom" not in pod["initContainers"][0]
    assert [d["kind"] for d in docs].count("Secret") == 1  # the user's Secret is named, never created


def test_the_install_script_hands_the_stage_container_the_interpreter_it_installed(tmp_path: Path) -> None:
    """The two commands as a pod runs them, with a python3 that reports being baked with the package:
    the init container writes that interpreter's path into the volume, the stage container execs it."""
    package = code_package_for(STORE)
    install, run = code_package_commands(package, placeholder_urls(package, STORE), python=str(tmp_path / "python3"))
    (tmp_path / "python3").write_text(f'#!/bin/sh\necho "{tmp_path}/python3"\n')  # the installer's answer
    (tmp_path / "python3").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SKYFLOW_NODE_ROOT": str(tmp_path / "volume")}
    subprocess.run(list(install), env=env, check=True)
    assert (tmp_path / "volume" / ".code" / "python").read_text() == f"{tmp_path}/python3\n"
    (tmp_path / "python3").write_text('#!/bin/sh\necho "wrapper: $SKYFLOW_PYTHON $*"\n')
    done = subprocess.run(list(run), env=env, capture_output=True, text=True, check=True)
    assert done.stdout == f"wrapper: {tmp_path}/python3 -P -m skyflow.backends.remote_stage\n"


def _installer_config(script: str) -> dict[str, Any]:
    """The JSON the bootstrap hands its installer (the last single-quoted argument)."""
    quoted = script.split("python3 -I -c ", 1)[1].split(") || exit", 1)[0]
    return dict(json.loads(shlex.split(quoted)[1]))


def _plain_launch(tmp_path: Path, **fields: Any) -> StageLaunch:
    from skyflow.backends.fake import launch_for
    from skyflow.planner import Placement

    placement = Placement(infra="kubernetes/gke", cloud="kubernetes", region="gke", zone=None, instance_type="",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0, store_uri=STORE)
    return launch_for(tmp_path, "python serve.py", placement=placement, **fields)


def test_a_stage_timeout_becomes_the_jobs_active_deadline(tmp_path: Path) -> None:
    docs = _backend().manifests(_plain_launch(tmp_path, timeout_s=5400.5), STORE)
    assert docs[-1]["kind"] == "Job" and docs[-1]["spec"]["activeDeadlineSeconds"] == 5400


def test_a_service_without_secrets_is_a_deployment_and_a_service_only(tmp_path: Path) -> None:
    launch = _plain_launch(tmp_path, spec={"resources": {"ports": 8000}, "service": {"readiness_probe": "/health"}})
    docs = _backend().manifests(launch, STORE)
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in container  # no Secret to take variables from


def test_service_manifests_for_a_stage_without_a_service_section_are_refused(tmp_path: Path) -> None:
    from skyflow.backends.kubernetes_manifests import service_manifests

    with pytest.raises(BackendError, match=r"^stage 'train' has no service: section$"):
        service_manifests(_plain_launch(tmp_path), None, {})  # type: ignore[arg-type]
