"""KubernetesBackend end to end through the official client: create, watch, logs, delete.

No Kubernetes API server can run on the machines these tests run on (no container runtime), so kmock's
``KubernetesEmulator`` stands in for it: a stateful in-memory API server over HTTP that stores,
lists, watches and deletes objects. It has no controllers and ignores label selectors, so this
module plays the Job controller and the kubelet itself (:class:`JobController`): it watches Jobs
through the official client, runs each pod's container command (the stage wrapper, as the image
would) as a local process with the pod's env and Secret, serves the output as the pod's log, and
patches pod and Job status the way Kubernetes does. Artifacts go through a real S3 server (moto).

The ``realcluster`` variants run the same tests against a real cluster (kind, GKE, EKS) and are
skipped unless ``SKYFLOW_REAL_K8S_CONTEXT`` names a kubeconfig context; they also need
``SKYFLOW_REAL_K8S_STORE`` (an s3:// prefix both this machine and the pods can write) and
``SKYFLOW_REAL_K8S_IMAGE`` (an image with ``skyflow[s3]`` installed) — see docs/backends.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import commit_output, open_store
from skyflow.backends.base import StageLaunch
from skyflow.backends.kubernetes import KubernetesBackend, KubernetesStageHandle
from skyflow.backends.masking import MASK
from skyflow.spec.config import KubernetesConfig, KubernetesContext, SkyflowConfig

pytestmark = pytest.mark.integration

NAMESPACE = "ml"
SECRET = "s3cr3t-token-value"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


# -- kmock in a thread of its own, so the synchronous official client can talk to it ---------------

@contextmanager
def kmock_server() -> Iterator[Any]:
    """A KubernetesEmulator serving on 127.0.0.1 from a background event loop."""
    import kmock

    started, stop, box = threading.Event(), threading.Event(), {}

    async def serve() -> None:
        emulator: Any
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator):
            for resource in ("v1/pods", "v1/services", "v1/secrets", "batch/v1/jobs", "apps/v1/deployments"):
                emulator.resources[resource] = {}  # listing a kind nobody created yet is then empty, not 404
            box["emulator"] = emulator
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="kmock")
    thread.start()
    assert started.wait(30), "kmock did not start"
    try:
        yield box["emulator"]
    finally:
        stop.set()
        thread.join(timeout=30)


def api_client(url: str) -> Any:
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=url))


# -- the Job controller and kubelet kmock lacks ---------------------------------------------------

@dataclass
class JobController:
    """Runs each Job's pods as local processes and reports them back through the API.

    Pods stay Pending while their process runs (kmock cannot stream a log that is still being
    written), then turn Succeeded/Failed with the container's exit code and the whole output as their
    log; the Job gets the Complete or Failed condition Kubernetes would set. Deleting a Job kills its
    processes and deletes its pods, as the garbage collector would with background propagation.
    """

    emulator: Any
    root: Path
    node_env: dict[str, str]
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.api = api_client(str(self.emulator.url))
        self.batch: Any = client.BatchV1Api(self.api)
        self.core: Any = client.CoreV1Api(self.api)
        self.thread = threading.Thread(target=self._watch, daemon=True, name="job-controller")
        self.thread.start()

    def _watch(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.batch.list_namespaced_job, NAMESPACE, _request_timeout=1):
                    job = event["object"]
                    if event["type"] == "ADDED" and job.metadata.name not in self.seen:
                        self.seen.append(job.metadata.name)
                        threading.Thread(target=self._run_job, args=(job,), daemon=True).start()
                    elif event["type"] == "DELETED":
                        self._collect(job.metadata.name)
            except Exception:  # the watch timed out or the server went away: watch again
                continue

    def stop(self) -> None:
        self._stop.set()
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        self.thread.join(timeout=10)

    def _pod_env(self, job: Any, pod: str, index: int) -> dict[str, str]:
        container = job.spec.template.spec.containers[0]
        env = {**self.node_env, **{e.name: e.value for e in container.env or []}}
        for source in container.env_from or []:
            secret = self.core.read_namespaced_secret(source.secret_ref.name, NAMESPACE)
            env.update(secret.string_data or {})  # kmock keeps stringData as written
        env["SKYFLOW_NODE_ROOT"] = str(self.root / pod)  # the pod's emptyDir volume
        if job.spec.completion_mode == "Indexed":
            env["JOB_COMPLETION_INDEX"] = str(index)
        return env

    def _run_job(self, job: Any) -> None:
        name = job.metadata.name
        nodes = job.spec.completions or 1
        command = [sys.executable, *job.spec.template.spec.containers[0].command[1:]]
        pods = [f"{name}-{i}-pod" if nodes > 1 else f"{name}-pod" for i in range(nodes)]
        for index, pod in enumerate(pods):
            self.core.create_namespaced_pod(NAMESPACE, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": NAMESPACE,
                             "labels": {**job.spec.template.metadata.labels, "job-name": name},
                             "annotations": {INDEX_ANNOTATION: str(index)} if nodes > 1 else {}},
                "spec": {"containers": [{"name": "stage", "image": "skyflow"}]},
                "status": {"phase": "Pending"}})
        self.procs[name] = [subprocess.Popen(command, env=self._pod_env(job, pod, i), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT) for i, pod in enumerate(pods)]
        codes = []
        for pod, proc in zip(pods, self.procs[name], strict=True):
            output, _ = proc.communicate()
            if name not in self.procs:  # the Job was deleted meanwhile; its pods are gone
                return
            codes.append(proc.returncode)
            self.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << output
            terminated = {"exitCode": proc.returncode, "reason": "Completed" if proc.returncode == 0 else "Error"}
            self.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": {
                "phase": "Succeeded" if proc.returncode == 0 else "Failed",
                "containerStatuses": [{"name": "stage", "image": "skyflow", "imageID": "", "ready": False,
                                       "restartCount": 0, "state": {"terminated": terminated}}]}})
        if self._stop.is_set() or name not in self.procs:
            return
        failed = sum(1 for code in codes if code != 0)
        condition = ({"type": "Complete", "status": "True"} if not failed else
                     {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit"})
        self.batch.patch_namespaced_job_status(name, NAMESPACE, {"status": {
            "succeeded": nodes - failed, "failed": failed, "conditions": [condition]}})

    def _collect(self, job: str) -> None:
        for proc in self.procs.pop(job, []):
            if proc.poll() is None:
                proc.kill()
        for pod in self.core.list_namespaced_pod(NAMESPACE).items:
            if (pod.metadata.labels or {}).get("job-name") == job:
                self.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)


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


def _config(context: str, image: str) -> SkyflowConfig:
    settings = KubernetesContext(namespace=NAMESPACE, image=image)
    return SkyflowConfig(kubernetes=KubernetesConfig(contexts={context: settings}))


@pytest.fixture(params=["kmock", pytest.param("real", marks=pytest.mark.realcluster)])
def cluster(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterUnderTest]:
    if request.param == "real":
        context = os.environ.get("SKYFLOW_REAL_K8S_CONTEXT")
        if not context:
            pytest.skip("set SKYFLOW_REAL_K8S_CONTEXT (and SKYFLOW_REAL_K8S_STORE, SKYFLOW_REAL_K8S_IMAGE) "
                        "to run against a real cluster")
        store = os.environ["SKYFLOW_REAL_K8S_STORE"].rstrip("/") + f"/t{time.time_ns()}"
        backend = KubernetesBackend(_config(context, os.environ["SKYFLOW_REAL_K8S_IMAGE"]), poll_s=2.0)
        yield ClusterUnderTest(backend, backend._cluster(context).api_client, store)
        return
    s3 = request.getfixturevalue("s3_server")
    aws = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    store = s3.new_uri()
    open_store(store, create=True)
    with kmock_server() as emulator:
        controller = JobController(emulator, tmp_path / "pods", {"PATH": os.environ["PATH"], **aws})
        backend = KubernetesBackend(_config("kmock", "skyflow:test"),
                                    client_factory=lambda _ctx: api_client(str(emulator.url)), poll_s=0.05)
        try:
            yield ClusterUnderTest(backend, api_client(str(emulator.url)), store, controller)
        finally:
            controller.stop()


def _launch(cluster: ClusterUnderTest, tmp_path: Path, run: str, *, num_nodes: int = 1,
            input_refs: dict[str, Any] | None = None, outputs: tuple[str, ...] = ("model",),
            timeout_s: float | None = None) -> StageLaunch:
    run_id = f"k8s-{time.time_ns()}"
    return StageLaunch(
        run_id=run_id, stage="train", attempt=1, setup=None, run=run, workdir=tmp_path, num_nodes=num_nodes,
        env={"SKYFLOW_STAGE": "train", "GREETING": "hello from the pod", "HF_TOKEN": SECRET},
        log_path=tmp_path / "logs" / "stage.log", timeout_s=timeout_s, secret_values=(SECRET,),
        input_refs=input_refs or {}, outputs={o: tmp_path / o for o in outputs}, store_uri=cluster.store_uri,
        placement={"infra": "kubernetes/kmock" if cluster.controller else
                   f"kubernetes/{os.environ.get('SKYFLOW_REAL_K8S_CONTEXT')}"})


def _read(store_uri: str, ref: dict[str, Any], dest: Path) -> Path:
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    artifact = ArtifactRef(name="model", uri=ref["uri"], digest=ref["digest"], size_bytes=ref["size_bytes"],
                           file_count=0, store=open_store(store_uri))
    return fetch_artifact(artifact, dest)


def _wait_for(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- the tests ----------------------------------------------------------------------------------------

def test_one_node_stage_fetches_inputs_runs_commits_and_is_cleaned_up(cluster: ClusterUnderTest,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("some rows\n")
    data = commit_output(open_store(cluster.store_uri), tmp_path / "data", name="data")
    refs = {"data": {"uri": data.uri, "digest": data.digest, "size_bytes": data.size_bytes,
                     "store_uri": cluster.store_uri}}
    launch = _launch(cluster, tmp_path, 'echo "$GREETING, token=$HF_TOKEN"; '
                     'tr a-z A-Z < "$SKYFLOW_INPUT_DATA/rows.txt" > "$SKYFLOW_OUTPUT_MODEL/model.txt"',
                     input_refs=refs)
    handle = cluster.backend.launch(launch)
    kinds = sorted(kind for kind, _ in cluster.objects(launch.run_id))
    assert "Job" in kinds and "Secret" in kinds
    exit_ = handle.wait()
    assert exit_.ok, exit_.reason
    assert exit_.outputs is not None and set(exit_.outputs) == {"model"}
    model = _read(cluster.store_uri, dict(exit_.outputs["model"]), tmp_path / "back")
    assert (model / "model.txt").read_text() == "SOME ROWS\n"
    log = launch.log_path.read_text()
    assert f"hello from the pod, token={MASK}" in log and SECRET not in log
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
    head = _read(cluster.store_uri, dict(exit_.outputs["model"]), tmp_path / "back") / "head.txt"
    assert head.read_text().strip() == f"{job}-0.{job}.{NAMESPACE}.svc.cluster.local"
    log = launch.log_path.read_text().splitlines()
    assert "(node 0) rank 0 of 2" in log and "(node 1) rank 1 of 2" in log
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_a_failed_job_is_a_failed_stage_with_the_container_exit_code(cluster: ClusterUnderTest,
                                                                       tmp_path: Path) -> None:
    launch = _launch(cluster, tmp_path, 'echo "about to fail"; exit 7')
    exit_ = cluster.backend.launch(launch).wait()
    assert not exit_.ok and exit_.exit_code == 7
    assert "BackoffLimitExceeded" in exit_.reason
    assert "about to fail" in launch.log_path.read_text()
    _wait_for(lambda: cluster.objects(launch.run_id) == [])


def test_cancel_deletes_the_job_its_service_and_its_secret(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    launch = _launch(cluster, tmp_path, "sleep 120", num_nodes=2)
    handle = cluster.backend.launch(launch)
    assert isinstance(handle, KubernetesStageHandle)
    assert len(cluster.objects(launch.run_id)) >= 3
    if cluster.controller is not None:
        controller = cluster.controller
        _wait_for(lambda: len(controller.procs.get(handle.job["metadata"]["name"], [])) == 2)
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
        _wait_for(lambda: len(controller.procs.get(handle.job["metadata"]["name"], [])) == 2)
    stored = json.loads(json.dumps(handle.remote))  # what the run state keeps
    assert {o["kind"] for o in stored["objects"]} == {"Secret", "Service", "Job"}
    fresh = KubernetesBackend(cluster.backend.config, client_factory=cluster.backend._open_client)
    fresh.abandon(stored)
    _wait_for(lambda: cluster.objects(launch.run_id) == [])
    if cluster.controller is not None:
        assert handle.job["metadata"]["name"] not in cluster.controller.procs


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
    from skyflow.runner.api import down_run
    from skyflow.runner.state import RunStore
    from skyflow.spec.models import Stage

    spec = Stage.model_validate({"run": "python -m http.server 8080",
                                 "service": {"readiness_probe": "/", "replicas": 2, "ports": 8080}})
    launch = replace(_launch(cluster, tmp_path, "python -m http.server 8080", outputs=()), stage_spec=spec)
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
    assert down_run(launch.run_id, backends=pool) == ["serve"]
    _wait_for(lambda: cluster.objects(launch.run_id) == [] and _deployments(cluster) == [])
    assert store.get_run(launch.run_id).stages["serve"].remote_handle is None
    assert down_run(launch.run_id, backends=pool) == []


def _deployments(cluster: ClusterUnderTest) -> list[str]:
    from kubernetes import client

    items = client.AppsV1Api(cluster.api).list_namespaced_deployment(NAMESPACE).items
    return [str(d.metadata.name) for d in items if d.metadata is not None]
