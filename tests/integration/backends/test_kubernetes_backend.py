"""KubernetesBackend end to end through the official client: create, watch, logs, delete.

No Kubernetes API server can run on the machines these tests run on (no container runtime), so kmock's
``KubernetesEmulator`` stands in for it: a stateful in-memory API server over HTTP that stores,
lists, watches and deletes objects. It has no controllers and ignores label selectors, so the
tests play the Job controller and the kubelet themselves (:class:`JobController` in kmock_cluster.py):
it watches Jobs through the official client, runs each pod's init containers and then its stage
container as local processes with the pod's env, Secrets and volumes, serves their output as the
containers' logs, and patches pod and Job status the way Kubernetes does. Artifacts go through a real
S3 server (moto); the pods get the store's credentials only from the Secret the context names
(``store_secret``).

Two kinds of image: ``bare_cluster`` is a context whose image lacks skyflow (the default), played by
a bare interpreter in a clean environment, so the init container really installs the code package
from signed URLs and the stage runs from it; ``cluster`` is a context flagged ``image_has_skyflow``,
played by this test environment's interpreter, for the tests about Jobs rather than installs.

The ``realcluster`` variants run the same tests against a real cluster (kind, GKE, EKS) and are
skipped unless ``SKYFLOW_REAL_K8S_CONTEXT`` names a kubeconfig context; they also need
``SKYFLOW_REAL_K8S_STORE`` (an s3:// prefix both this machine and the pods can write) and
``SKYFLOW_REAL_K8S_IMAGE`` (an image with ``skyflow-llmops`` installed, for ``cluster``), and take
``SKYFLOW_REAL_K8S_STORE_SECRET`` (a Secret with the store's credentials) — see docs/backends.md.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRecord, commit_output, open_store
from skyflow.artifacts.code_package import upload_code_package
from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.kubernetes import KubernetesBackend, KubernetesStageHandle
from skyflow.backends.masking import MASK
from skyflow.backends.remote_stage import code_package_for
from skyflow.config import KubernetesConfig, KubernetesContext, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.planner import Placement
from tests.integration.backends.kmock_cluster import NAMESPACE, JobController, api_client, kmock_server

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-token-value"


# -- one cluster per test: kmock with the controller, or a real one ---------------------------------

@dataclass
class ClusterUnderTest:
    backend: KubernetesBackend
    api: Any
    store_uri: str
    controller: JobController | None = None

    def objects(self, run_id: str) -> list[tuple[str, str]]:
        """(kind, name) of everything the run left in the namespace (labels filtered here: kmock
        ignores label selectors)."""
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        batch: Any = client.BatchV1Api(self.api)
        found = []
        for kind, items in (("Job", batch.list_namespaced_job(NAMESPACE).items),
                            ("Service", core.list_namespaced_service(NAMESPACE).items),
                            ("Secret", core.list_namespaced_secret(NAMESPACE).items),
                            ("Pod", core.list_namespaced_pod(NAMESPACE).items)):
            found += [(kind, o.metadata.name) for o in items
                      if (o.metadata.labels or {}).get("skyflow.dev/run") == run_id]
        return found


STORE_SECRET = "store-credentials"
BARE_IMAGE = "python:3.11-slim"
SKYFLOW_IMAGE = "skyflow:test"


def _config(context: str, image: str, has_skyflow: bool, store_secret: str | None) -> SkyflowConfig:
    settings = KubernetesContext(namespace=NAMESPACE, image=image, image_has_skyflow=has_skyflow,
                                 store_secret=store_secret)
    return SkyflowConfig(kubernetes=KubernetesConfig(contexts={context: settings}))


def _cluster(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             has_skyflow: bool) -> Iterator[ClusterUnderTest]:
    if request.param == "real":
        context = os.environ.get("SKYFLOW_REAL_K8S_CONTEXT")
        if not context:
            pytest.skip("set SKYFLOW_REAL_K8S_CONTEXT (and SKYFLOW_REAL_K8S_STORE, SKYFLOW_REAL_K8S_IMAGE) "
                        "to run against a real cluster")
        store = os.environ["SKYFLOW_REAL_K8S_STORE"].rstrip("/") + f"/t{time.time_ns()}"
        image = os.environ["SKYFLOW_REAL_K8S_IMAGE"] if has_skyflow else BARE_IMAGE
        config = _config(context, image, has_skyflow, os.environ.get("SKYFLOW_REAL_K8S_STORE_SECRET"))
        backend = KubernetesBackend(config, poll_s=2.0)
        yield ClusterUnderTest(backend, backend._cluster(context).api_client, store)
        return
    s3 = request.getfixturevalue("s3_server")
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    where = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in {**where, **credentials}.items():
        monkeypatch.setenv(key, value)
    store = s3.new_uri()
    open_store(store, create=True)
    with kmock_server() as emulator:
        from kubernetes import client

        # The pods learn where the store is from the cluster (as a node's environment would say), and
        # its credentials only from the Secret the context names.
        secret = client.V1Secret.model_validate({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET, "namespace": NAMESPACE},
            "stringData": credentials})
        client.CoreV1Api(api_client(str(emulator.url))).create_namespaced_secret(NAMESPACE, secret)
        controller = JobController(emulator, tmp_path / "pods", {"PATH": os.environ["PATH"], **where},
                                   skyflow_images=frozenset({SKYFLOW_IMAGE}))
        config = _config("kmock", SKYFLOW_IMAGE if has_skyflow else BARE_IMAGE, has_skyflow, STORE_SECRET)
        backend = KubernetesBackend(config, client_factory=lambda _ctx: api_client(str(emulator.url)), poll_s=0.05)
        try:
            yield ClusterUnderTest(backend, api_client(str(emulator.url)), store, controller)
        finally:
            controller.stop()


@pytest.fixture(params=["kmock", pytest.param("real", marks=pytest.mark.realcluster)])
def cluster(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterUnderTest]:
    """A context whose image has skyflow: pods run the wrapper directly."""
    yield from _cluster(request, tmp_path, monkeypatch, has_skyflow=True)


@pytest.fixture(params=["kmock", pytest.param("real", marks=pytest.mark.realcluster)])
def bare_cluster(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterUnderTest]:
    """A context whose image lacks skyflow: an init container installs the code package first."""
    yield from _cluster(request, tmp_path, monkeypatch, has_skyflow=False)


def _launch(cluster: ClusterUnderTest, tmp_path: Path, run: str, *, num_nodes: int = 1,
            input_refs: dict[str, ArtifactRecord] | None = None, outputs: tuple[str, ...] = ("model",),
            timeout_s: float | None = None, spec: dict[str, Any] | None = None) -> StageLaunch:
    run_id = f"k8s-{time.time_ns()}"
    infra = "kubernetes/kmock" if cluster.controller else f"kubernetes/{os.environ.get('SKYFLOW_REAL_K8S_CONTEXT')}"
    placement = Placement(infra=infra, cloud="kubernetes", region=infra.split("/")[1], zone=None, instance_type="",
                          accelerators={}, use_spot=False, num_nodes=num_nodes, hourly_usd=0.0, hours=0.0,
                          store_uri=cluster.store_uri)
    launch = launch_for(tmp_path, run, num_nodes=num_nodes, timeout_s=timeout_s, placement=placement, spec=spec,
                        env={"SKYFLOW_STAGE": "train", "GREETING": "hello from the pod", "HF_TOKEN": SECRET},
                        secrets=(SECRET,), input_refs=input_refs, outputs={o: tmp_path / o for o in outputs},
                        run_id=run_id)
    return replace(launch, log_path=tmp_path / "logs" / "stage.log")


def _read(store_uri: str, ref: ArtifactRecord, dest: Path) -> Path:
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    return fetch_artifact(ArtifactRef.open(ref, store=open_store(store_uri)), dest)


def _wait_for(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- the tests ----------------------------------------------------------------------------------------

def test_one_node_stage_installs_skyflow_fetches_inputs_runs_commits_and_is_cleaned_up(
        bare_cluster: ClusterUnderTest, tmp_path: Path) -> None:
    cluster = bare_cluster
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("some rows\n")
    data = commit_output(open_store(cluster.store_uri), tmp_path / "data", name="data")
    refs = {"data": data.record}
    launch = _launch(cluster, tmp_path, 'echo "$GREETING, token=$HF_TOKEN"; '
                     'tr a-z A-Z < "$SKYFLOW_INPUT_DATA/rows.txt" > "$SKYFLOW_OUTPUT_MODEL/model.txt"; '
                     '"$SKYFLOW_PYTHON" -c "import skyflow; print(skyflow.__file__)" '
                     '> "$SKYFLOW_OUTPUT_MODEL/where.txt"',
                     input_refs=refs)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    kinds = sorted(kind for kind, _ in cluster.objects(launch.run_id))
    assert "Job" in kinds and "Secret" in kinds
    package = code_package_for(cluster.store_uri)
    assert open_store(cluster.store_uri).size_of(package.index_key) is not None  # shipped before the Job
    exit_ = handle.wait()
    assert exit_.ok, exit_.reason
    assert exit_.outputs is not None and set(exit_.outputs) == {"model"}
    model = _read(cluster.store_uri, exit_.outputs["model"], tmp_path / "back")
    assert (model / "model.txt").read_text() == "SOME ROWS\n"
    if cluster.controller is not None:
        # The stage ran from the package the init container installed in the pod's volume.
        env = tmp_path / "pods" / f"{handle.job['metadata']['name']}-pod" / "skyflow" / ".code" / package.digest
        assert Path((model / "where.txt").read_text().strip()).is_relative_to(env)
    log = launch.log_path.read_text()
    assert f"hello from the pod, token={MASK}" in log and SECRET not in log
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_a_failed_install_fails_the_stage_with_the_init_containers_output(
        bare_cluster: ClusterUnderTest, tmp_path: Path) -> None:
    cluster = bare_cluster
    package = code_package_for(cluster.store_uri)
    store = open_store(cluster.store_uri)
    upload_code_package(package, store)
    own = package.files[0]
    store.write_bytes(package.key(own), b"not the wheel")  # what the pods download is not what was built
    launch = _launch(cluster, tmp_path, "echo never runs")
    exit_ = cluster.backend.launch(launch).wait()
    assert not exit_.ok and exit_.exit_code == 3
    assert "installing skyflow's code package failed with exit code 3" in exit_.reason
    assert "-c code-package" in exit_.reason
    log = launch.log_path.read_text()
    assert f"(code-package) skyflow: {own.name} does not have the bytes the code package lists" in log
    assert "never runs" not in log
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_multi_node_stage_is_an_indexed_job_whose_head_commits(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    launch = _launch(cluster, tmp_path, 'echo "rank $SKYPILOT_NODE_RANK of $(echo "$SKYPILOT_NODE_IPS" | wc -l)"; '
                     'echo "$SKYPILOT_HEAD_IP" > "$SKYFLOW_OUTPUT_MODEL/head.txt"', num_nodes=2)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    job = handle.job["metadata"]["name"]
    created = sorted(o for o in cluster.objects(launch.run_id) if o[0] != "Pod")
    assert created == [("Job", job), ("Secret", job), ("Service", job)]
    exit_ = handle.wait()
    assert exit_.ok, exit_.reason
    assert exit_.outputs is not None
    head = _read(cluster.store_uri, exit_.outputs["model"], tmp_path / "back") / "head.txt"
    assert head.read_text().strip() == f"{job}-0.{job}.{NAMESPACE}.svc.cluster.local"
    log = launch.log_path.read_text().splitlines()
    assert "(node 0) rank 0 of 2" in log and "(node 1) rank 1 of 2" in log
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_the_stage_log_streams_while_the_pod_runs(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    """A line reaches the runner while the stage is still running: the stage prints it, then waits
    until the test, having seen the line, writes a release object to the store both can reach."""
    store = open_store(cluster.store_uri)
    release = f"release-{time.time_ns()}"
    lines: list[str] = []
    cluster.backend.on_line = lambda stage, line: lines.append(line)
    launch = _launch(cluster, tmp_path, 'echo "halfway" && python3 -c "\n'
                     'import sys, time, fsspec\n'
                     f'fs, path = fsspec.core.url_to_fs(\'{cluster.store_uri}/{release}\')\n'
                     'for _ in range(2400):\n'
                     '    fs.invalidate_cache()\n'
                     '    if fs.exists(path): break\n'
                     '    time.sleep(0.05)\n'
                     'else: sys.exit(\'never released: the log did not stream while the pod ran\')\n'
                     'print(\'released\')" && echo done > "$SKYFLOW_OUTPUT_MODEL/done.txt"')
    handle = cluster.backend.launch(launch)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(handle.wait()))
    waiter.start()
    _wait_for(lambda: "halfway" in lines, timeout_s=120)
    assert "released" not in lines  # the stage is still waiting: the line came while it ran
    store.write_bytes(release, b"go")
    waiter.join(timeout=180)
    assert result and result[0].ok, result and result[0].reason
    assert lines.index("halfway") < lines.index("released")
    assert "released" in launch.log_path.read_text()
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_a_failed_job_is_a_failed_stage_with_the_container_exit_code(cluster: ClusterUnderTest,
                                                                       tmp_path: Path) -> None:
    launch = _launch(cluster, tmp_path, 'echo "about to fail"; exit 7')
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    exit_ = handle.wait()
    # the code is the stage process's own, read from the pod's terminated container status
    assert not exit_.ok and exit_.exit_code == 7
    # the reason is the Failed condition the Job ended with, whatever its controller wrote
    if cluster.controller is not None:
        written = cluster.controller.conditions[handle.job["metadata"]["name"]]
        assert exit_.reason == f"{written['reason']}: {written['message']}"
    else:
        assert exit_.reason.startswith("BackoffLimitExceeded: ")
    assert "about to fail" in launch.log_path.read_text()
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_cancel_deletes_the_job_its_service_and_its_secret(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    launch = _launch(cluster, tmp_path, "sleep 120", num_nodes=2)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    assert len(cluster.objects(launch.run_id)) >= 3
    if cluster.controller is not None:
        controller = cluster.controller
        _wait_for(lambda: controller.stages_started.get(handle.job["metadata"]["name"], 0) == 2)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(handle.wait()))
    waiter.start()
    handle.cancel()
    waiter.join(timeout=60)
    assert result and result[0].cancelled and not result[0].ok
    _wait_for(lambda: cluster.objects(launch.run_id) == [])
    if cluster.controller is not None:
        assert handle.job["metadata"]["name"] not in cluster.controller.procs


def test_abandon_deletes_what_a_dead_runners_attempt_left(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    """`skyflow resume` after the runner died: a fresh backend finds the Job from the stored handle."""
    launch = _launch(cluster, tmp_path, "sleep 120", num_nodes=2)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    if cluster.controller is not None:  # the runner died while the pods were running
        controller = cluster.controller
        _wait_for(lambda: controller.stages_started.get(handle.job["metadata"]["name"], 0) == 2)
    stored = json.loads(json.dumps(handle.remote))  # what the run state keeps
    assert {o["kind"] for o in stored["objects"]} == {"Secret", "Service", "Job"}
    fresh = KubernetesBackend(cluster.backend.config, client_factory=cluster.backend._open_client)
    fresh.abandon(Leftover(remote=stored))
    _wait_for(lambda: cluster.objects(launch.run_id) == [])
    if cluster.controller is not None:
        assert handle.job["metadata"]["name"] not in cluster.controller.procs


def _started(cluster: ClusterUnderTest, handle: KubernetesStageHandle, nodes: int = 1) -> list[Any]:
    """Once the attempt's stage containers run: their processes (none against a real cluster)."""
    if cluster.controller is None:
        return []
    controller, name = cluster.controller, handle.job["metadata"]["name"]
    _wait_for(lambda: controller.stages_started.get(name, 0) == nodes)
    return list(controller.procs[name])


def _read_job(cluster: ClusterUnderTest, name: str) -> Any:
    from kubernetes import client

    return client.BatchV1Api(cluster.api).read_namespaced_job(name, NAMESPACE)


def test_abandon_finds_what_a_runner_that_died_before_recording_it_left(cluster: ClusterUnderTest,
                                                                       tmp_path: Path) -> None:
    """The runner records the handle after the launch returns; one killed in between left objects that
    no handle names. Resume and cancel find them by the token of the attempt's log path, recorded first."""
    launch = _launch(cluster, tmp_path, "sleep 120", num_nodes=2)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    procs = _started(cluster, handle, nodes=2)
    fresh = KubernetesBackend(cluster.backend.config, client_factory=cluster.backend._open_client)
    fresh.abandon(Leftover(log_path=str(tmp_path / "another-attempt.log"), infra=launch.placement.infra))
    assert len(cluster.objects(launch.run_id)) >= 3  # another attempt's token: nothing of this one is touched
    fresh.abandon(Leftover(log_path=str(launch.log_path), infra=launch.placement.infra))
    _wait_for(lambda: not [o for o in cluster.objects(launch.run_id) if o[0] != "Pod"])
    _wait_for(lambda: all(proc.poll() is not None for proc in procs))


def test_a_launch_replaces_what_its_own_unrecorded_attempt_left(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    """Resume starts a stage's attempts again from the first, so the attempt a dead runner never recorded
    has the same names: the launch finds them carrying its own token, deletes them and creates its own."""
    first = _launch(cluster, tmp_path, "sleep 120")
    orphan = cluster.backend.launch(first)
    assert isinstance(orphan, KubernetesStageHandle)
    procs = _started(cluster, orphan)
    again = replace(first, spec=first.spec.model_copy(update={"run": "echo resumed"}))
    fresh = KubernetesBackend(cluster.backend.config, client_factory=cluster.backend._open_client)
    handle = fresh.launch(again)
    assert isinstance(handle, KubernetesStageHandle)
    name = handle.job["metadata"]["name"]
    assert name == orphan.job["metadata"]["name"]
    assert "echo resumed" in json.dumps(_read_job(cluster, name).to_dict()["spec"]["template"])
    _wait_for(lambda: all(proc.poll() is not None for proc in procs))  # the orphan's pod is gone with its Job
    handle.cancel()
    _wait_for(lambda: not [o for o in cluster.objects(first.run_id) if o[0] != "Pod"])


def test_objects_of_the_same_name_from_another_home_are_left_alone(cluster: ClusterUnderTest,
                                                                   tmp_path: Path) -> None:
    """Another skyflow home ran a run of the same id on the cluster: the launch stops with an error that
    says so and how to go on, deletes what it created itself (Secret, Service) and nothing of the other's."""
    theirs = replace(_launch(cluster, tmp_path, "sleep 120"), secret_values=(), env={"SKYFLOW_STAGE": "train"})
    their_handle = cluster.backend.launch(theirs)
    assert isinstance(their_handle, KubernetesStageHandle)
    procs = _started(cluster, their_handle)
    assert [kind for kind, _ in cluster.objects(theirs.run_id) if kind != "Pod"] == ["Job"]
    (tmp_path / "our-home").mkdir()
    ours = _launch(cluster, tmp_path / "our-home", "true", num_nodes=2)
    ours = replace(ours, run_id=theirs.run_id, log_path=tmp_path / "our-home" / "stage.log")
    with pytest.raises(BackendError, match=r"Job sf-train-\w+ already exists in namespace ml and is not this "
                                           r"attempt's .*--run-id.*kubectl delete job"):
        cluster.backend.launch(ours)
    assert [kind for kind, _ in cluster.objects(theirs.run_id) if kind != "Pod"] == ["Job"]
    job = _read_job(cluster, their_handle.job["metadata"]["name"])
    assert job.metadata.annotations == their_handle.job["metadata"]["annotations"]
    assert all(proc.poll() is None for proc in procs)
    their_handle.cancel()


def _mark_deployment_ready(cluster: ClusterUnderTest, name: str, replicas: int) -> None:
    """What the Deployment controller reports once every replica passes its readiness probe."""
    from kubernetes import client

    client.AppsV1Api(cluster.api).patch_namespaced_deployment_status(name, NAMESPACE, {"status": {
        "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}})


def test_service_stage_is_ready_with_its_replicas_and_skyflow_down_deletes_it(
        cluster: ClusterUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if cluster.controller is None:
        pytest.skip("on a real cluster the image must serve the probe; see docs/backends.md")
    from skyflow.backends.registry import BackendContext, BackendPool
    from skyflow.runner.state import RunStore
    from skyflow.session import Session

    launch = _launch(cluster, tmp_path, "python -m http.server 8080", outputs=(),
                     spec={"service": {"readiness_probe": "/", "replicas": 2, "ports": 8080}})
    service = cluster.backend.serve(launch)
    deployment = next(d for d in service.docs if d["kind"] == "Deployment")["metadata"]["name"]
    assert service.endpoint == f"http://{deployment}.{NAMESPACE}.svc.cluster.local:8080"
    assert service.wait_ready(threading.Event(), timeout_s=0.2) == "not ready after 0.2 s"
    _mark_deployment_ready(cluster, deployment, 2)
    assert service.wait_ready(threading.Event(), timeout_s=30) is None

    # The runner recorded the service; `skyflow down` in another process stops it from that record.
    monkeypatch.setenv("SKYFLOW_HOME", str(tmp_path / "home"))
    store = RunStore()
    store.create_run(launch.run_id, "p", "serve", "d", {}, {}, None, ["serve"], None)
    store.finish_stage(launch.run_id, "serve", "succeeded", {}, infra="kubernetes/kmock",
                       endpoint=service.endpoint, remote_handle=json.dumps(service.remote))
    assert sorted(kind for kind, _ in cluster.objects(launch.run_id)) == ["Secret", "Service"]
    assert _deployments(cluster) == [deployment]
    pool = BackendPool(BackendContext(config=cluster.backend.config,
                                      extra={"kubernetes_client_factory": cluster.backend._open_client}))
    session = Session(home=tmp_path / "home")
    assert session.down(launch.run_id, backends=pool) == ["serve"]
    _wait_for(lambda: cluster.objects(launch.run_id) == [] and _deployments(cluster) == [])
    assert store.get_run(launch.run_id).stages["serve"].remote_handle is None
    assert session.down(launch.run_id, backends=pool) == []


def _deployments(cluster: ClusterUnderTest) -> list[str]:
    from kubernetes import client

    items = client.AppsV1Api(cluster.api).list_namespaced_deployment(NAMESPACE).items
    return [str(d.metadata.name) for d in items if d.metadata is not None]
