"""How the Kubernetes backend reads a Job's end from what the API server reports (conditions, counts,
container and init container states, evictions, disruptions, deleted pods), and what it does when the
API server refuses a call or cannot be reached: the stage's verdict, the words the user sees, and that
what was created is deleted again."""

from __future__ import annotations

import json
import sys
import threading
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import open_store
from skyflow.backends import kubernetes as k8s
from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.kubernetes import (
    Cluster,
    KubernetesBackend,
    KubernetesService,
    KubernetesStageHandle,
    default_client_factory,
)
from skyflow.backends.kubernetes_manifests import ATTEMPT_ANNOTATION, INSTALL_CONTAINER
from skyflow.backends.remote_stage import result_key
from skyflow.config import KubernetesConfig, KubernetesContext, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.planner import Placement

NS = types.SimpleNamespace


def _placement(store_uri: str | None = "s3://bucket/skyflow", num_nodes: int = 1) -> Placement:
    return Placement(infra="kubernetes/gke", cloud="kubernetes", region="gke", zone=None, instance_type="",
                     accelerators={}, use_spot=False, num_nodes=num_nodes, hourly_usd=0.0, hours=0.0,
                     store_uri=store_uri)


def _launch(tmp_path: Path, *, num_nodes: int = 1, timeout_s: float | None = None,
            spec: dict[str, Any] | None = None) -> StageLaunch:
    return launch_for(tmp_path, "python train.py", num_nodes=num_nodes, timeout_s=timeout_s,
                      placement=_placement(num_nodes=num_nodes), spec=spec, secrets=("s3cr3t",))


def _terminated(code: int, name: str = "stage") -> Any:
    return NS(name=name, state=NS(terminated=NS(exit_code=code)))


def _pod(name: str, *, phase: str = "Failed", codes: tuple[int, ...] = (), reason: str | None = None,
         message: str | None = None, conditions: list[Any] | None = None, init: list[Any] | None = None) -> Any:
    status = NS(phase=phase, reason=reason, message=message, conditions=conditions,
                container_statuses=[_terminated(c) for c in codes] or None, init_container_statuses=init)
    return NS(metadata=NS(name=name, labels={"job-name": "job"}, annotations=None), status=status)


def _job_status(*conditions: tuple[str, str, str | None, str | None], succeeded: int = 0, failed: int = 0) -> Any:
    return NS(conditions=[NS(type=t, status=s, reason=r, message=m) for t, s, r, m in conditions] or None,
              succeeded=succeeded, failed=failed)


class FakeCluster:
    """Answers job_status and pods_of from fixed values; records deletions and log reads."""

    def __init__(self, statuses: list[Any], pods: list[Any], install_log: str = "", logs_ready: bool = False) -> None:
        self.statuses, self.pods, self.install_log, self.logs_ready = statuses, pods, install_log, logs_ready
        self.deleted: list[list[str]] = []
        self.log_requests: list[str] = []

    def job_status(self, name: str, namespace: str) -> Any:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def pods_of(self, job: str, namespace: str) -> list[Any]:
        return self.pods

    def log_stream(self, pod: str, namespace: str) -> Any:
        self.log_requests.append(pod)
        raise RuntimeError("container is waiting to start: ContainerCreating")

    def log_text(self, pod: str, namespace: str, container: str) -> str:
        assert container == INSTALL_CONTAINER
        return self.install_log

    def delete(self, docs: list[dict[str, Any]]) -> None:
        self.deleted.append([d["metadata"]["name"] for d in docs])

    def ready_replicas(self, name: str, namespace: str) -> int:
        return 0


def _handle(tmp_path: Path, cluster: FakeCluster, launch: StageLaunch | None = None,
            store_uri: str = "") -> KubernetesStageHandle:
    docs = [{"kind": "Secret", "metadata": {"name": "sf-secret", "namespace": "ml"}},
            {"kind": "Job", "metadata": {"name": "sf-job", "namespace": "ml"}}]
    launch = launch or _launch(tmp_path)
    return KubernetesStageHandle(cluster, launch, docs, store_uri or str(tmp_path / "store"),  # type: ignore[arg-type]
                                 result_key("r1", "train", 1), "gke", poll_s=0.0)


def test_a_failed_condition_gives_the_containers_exit_code_and_the_jobs_reason(tmp_path: Path) -> None:
    status = _job_status(("Suspended", "False", None, None),
                         ("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    pods = [NS(metadata=NS(name="no-status", labels={"job-name": "job"}), status=None),
            _pod("p0", codes=(0, 3))]
    cluster = FakeCluster([status], pods)
    exit_ = _handle(tmp_path, cluster).wait()
    assert (exit_.exit_code, exit_.reason) == (3, "BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert not exit_.timed_out and not exit_.cancelled
    assert cluster.deleted == [["sf-secret", "sf-job"]]  # whatever the verdict, the Job is deleted
    assert cluster.log_requests == ["p0"]  # the pod with no status is not asked for logs


def test_a_failed_condition_without_reason_or_message_says_failed_and_no_exit_code_means_1(tmp_path: Path) -> None:
    status = _job_status(("Failed", "True", None, None))
    exit_ = _handle(tmp_path, FakeCluster([status], [_pod("p0", codes=(0,))])).wait()
    assert (exit_.exit_code, exit_.reason) == (1, "Failed")


def test_failed_pod_counts_without_conditions_fail_the_stage(tmp_path: Path) -> None:
    exit_ = _handle(tmp_path, FakeCluster([_job_status(failed=2)], [_pod("p0", codes=(7,))])).wait()
    assert (exit_.exit_code, exit_.reason) == (7, "2 pod(s) failed")


def test_succeeded_pod_counts_without_conditions_read_the_result(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"), create=True)
    outputs = {"model": {"uri": "s3://bucket/skyflow/manifests/x.json", "digest": "d" * 64, "size_bytes": 5}}
    store.write_bytes(result_key("r1", "train", 1), json.dumps({"outputs": outputs}).encode())
    exit_ = _handle(tmp_path, FakeCluster([_job_status(), _job_status(succeeded=1)], [])).wait()
    assert exit_.ok and exit_.outputs is not None
    assert exit_.outputs["model"].digest == "d" * 64 and exit_.outputs["model"].store_uri == store.uri


def test_a_succeeded_job_without_a_result_is_a_failure_naming_where_it_looked(tmp_path: Path) -> None:
    open_store(str(tmp_path / "store"), create=True)
    exit_ = _handle(tmp_path, FakeCluster([_job_status(("Complete", "True", None, None))], [])).wait()
    assert exit_.exit_code == 1
    assert exit_.reason == (f"the Job succeeded but wrote no result to {tmp_path / 'store'}/"
                            f"{result_key('r1', 'train', 1)}")


def test_an_evicted_pod_is_a_kill_from_outside_with_the_kubelets_message(tmp_path: Path) -> None:
    status = _job_status(("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    pods = [NS(metadata=NS(name="gone", labels={"job-name": "job"}), status=None),
            _pod("p0", codes=(137,), reason="Evicted", message="The node was low on resource: memory.")]
    exit_ = _handle(tmp_path, FakeCluster([status], pods)).wait()
    assert exit_.exit_code == -9
    assert exit_.reason == ("pod p0 was evicted: The node was low on resource: memory. "
                            "(BackoffLimitExceeded: Job has reached the specified backoff limit)")
    assert exit_.preempted


def test_a_disruption_target_names_why_and_keeps_the_signal_of_the_exit_code(tmp_path: Path) -> None:
    status = _job_status(("Failed", "True", "PodFailurePolicy", "pod disrupted"))
    disrupted = NS(type="DisruptionTarget", status="True", reason="PreemptionByScheduler",
                   message="preempted by a higher priority pod")
    pods = [_pod("p0", codes=(143,), conditions=[NS(type="Ready", status="False"), disrupted])]
    exit_ = _handle(tmp_path, FakeCluster([status], pods)).wait()
    assert exit_.exit_code == -15
    assert exit_.reason == ("pod p0 was disrupted (PreemptionByScheduler): preempted by a higher priority pod "
                            "(PodFailurePolicy: pod disrupted)")


def test_a_disrupted_pod_with_an_ordinary_exit_code_counts_as_sigkill(tmp_path: Path) -> None:
    status = _job_status(("Failed", "True", "PodFailurePolicy", None))
    disrupted = NS(type="DisruptionTarget", status="True", reason="DeletionByTaintManager", message="node lost")
    exit_ = _handle(tmp_path, FakeCluster([status], [_pod("p0", codes=(2,), conditions=[disrupted])])).wait()
    assert exit_.exit_code == -9 and exit_.reason.startswith("pod p0 was disrupted (DeletionByTaintManager)")


def test_a_failed_init_container_other_than_the_installer_is_not_an_install_failure(tmp_path: Path) -> None:
    status = _job_status(("Failed", "True", "BackoffLimitExceeded", None))
    init = [_terminated(1, name="istio-init"), _terminated(0, name=INSTALL_CONTAINER), NS(name="x", state=None)]
    exit_ = _handle(tmp_path, FakeCluster([status], [_pod("p0", codes=(5,), init=init)])).wait()
    assert (exit_.exit_code, exit_.reason) == (5, "BackoffLimitExceeded")


def test_a_job_past_its_timeout_is_timed_out_and_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 10_000, 100))
    monkeypatch.setattr(k8s, "time", NS(monotonic=lambda: float(next(ticks))))
    cluster = FakeCluster([_job_status()], [_pod("p0", phase="Pending")])
    exit_ = _handle(tmp_path, cluster, _launch(tmp_path, timeout_s=30)).wait()
    assert (exit_.exit_code, exit_.reason, exit_.timed_out) == (-9, "timed out after 30 s", True)
    assert cluster.deleted and cluster.log_requests == []  # a pending pod has no log yet


def test_a_watch_that_the_api_server_refuses_is_a_backend_error_naming_the_job(tmp_path: Path) -> None:
    class Refusing(FakeCluster):
        def job_status(self, name: str, namespace: str) -> Any:
            raise _api_exception(403, "Forbidden", '{"message": "jobs.batch is forbidden"}')

    cluster = Refusing([], [])
    with pytest.raises(BackendError, match=r'^Kubernetes: watching Job sf-job failed: Forbidden '
                                           r'\(\{"message": "jobs.batch is forbidden"\}\)$') as caught:
        _handle(tmp_path, cluster).wait()
    assert caught.value.stage == "train" and caught.value.backend == "kubernetes"
    assert cluster.deleted == [["sf-secret", "sf-job"]]


def test_a_cancel_that_deletes_the_job_while_the_watch_reads_it_is_a_cancel(tmp_path: Path) -> None:
    """cancel() runs on another thread: the Job it deletes can be gone by the watch's next read."""
    class DeletedUnderTheWatch(FakeCluster):
        def job_status(self, name: str, namespace: str) -> Any:
            handle.cancel()  # between the watch's check of the cancel and its read
            raise _api_exception(404, "Not Found", '{"reason": "NotFound"}')

    cluster = DeletedUnderTheWatch([], [])
    handle = _handle(tmp_path, cluster)
    exit_ = handle.wait()
    assert exit_.cancelled and not exit_.ok and exit_.exit_code == -15
    assert cluster.deleted == [["sf-secret", "sf-job"]] * 2  # by cancel(), and again when the wait ends


def _api_exception(status: int, reason: str, body: str) -> Exception:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc


# -- services ----------------------------------------------------------------------------------------

def _service(cluster: FakeCluster) -> KubernetesService:
    docs = [{"kind": "Deployment", "metadata": {"name": "sf-svc", "namespace": "ml"}},
            {"kind": "Service", "metadata": {"name": "sf-svc", "namespace": "ml"}}]
    return KubernetesService(cluster, docs, 2, "http://sf-svc.ml.svc.cluster.local:8080", "gke",  # type: ignore[arg-type]
                             poll_s=0.0)


def test_a_service_wait_that_is_cancelled_says_so_and_stop_deletes_its_objects() -> None:
    cluster = FakeCluster([], [])
    service = _service(cluster)
    cancel = threading.Event()
    cancel.set()
    assert service.wait_ready(cancel, timeout_s=600) == "cancelled"
    assert service.process_groups == []
    service.stop()
    assert cluster.deleted == [["sf-svc", "sf-svc"]]
    assert service.remote == {"backend": "kubernetes", "context": "gke", "objects": [
        {"kind": "Deployment", "name": "sf-svc", "namespace": "ml"},
        {"kind": "Service", "name": "sf-svc", "namespace": "ml"}]}


# -- the backend -------------------------------------------------------------------------------------

def _config(**contexts: KubernetesContext) -> SkyflowConfig:
    return SkyflowConfig(kubernetes=KubernetesConfig(contexts=contexts))


def test_capacity_is_the_sum_of_what_the_contexts_declare() -> None:
    backend = KubernetesBackend(_config(
        gke=KubernetesContext(cpus=64, memory_gb=256, accelerators={"A100": 8}),
        eks=KubernetesContext(cpus=32, accelerators={"A100": 4, "L4": 2}),
        bare=KubernetesContext()), client_factory=_no_client)
    cap = backend.capacity()
    assert (cap.cpus, cap.memory_gb, dict(cap.gpus), cap.max_parallel) == (96, 256, {"A100": 12, "L4": 2}, 64)


def _no_client(context: str) -> Any:
    raise AssertionError(f"no client for {context} may be opened")


def test_abandon_and_stop_service_without_a_recorded_handle_open_no_client() -> None:
    backend = KubernetesBackend(_config(), client_factory=_no_client)
    backend.abandon(Leftover(process_groups=(), remote=None))
    backend.stop_service(Leftover(remote=None))


class _Api:
    """One kubernetes API group's create, read and delete calls; the Job's create is refused. ``made``: the
    kinds the server has (with ``attempt``'s token) after a create that failed; the others read as 404."""

    def __init__(self, calls: list[str], made: dict[str, str]) -> None:
        self.calls, self.made = calls, made

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            named = not method.startswith("create")
            self.calls.append(f"{method} {args[0] if named else args[1]['metadata']['name']}")
            if method == "create_namespaced_job":
                raise _api_exception(422, "Unprocessable Entity", "spec.template: Invalid value")
            if method == "delete_namespaced_service":
                raise _api_exception(404, "Not Found", "")
            if method.startswith("read_namespaced_"):
                kind = method.removeprefix("read_namespaced_")
                if kind not in self.made:
                    raise _api_exception(404, "Not Found", "")
                annotations = {ATTEMPT_ANNOTATION: self.made[kind]}
                return types.SimpleNamespace(metadata=types.SimpleNamespace(annotations=annotations))
            return None
        return call


def _cluster_with(calls: list[str], made: dict[str, str] | None = None) -> Cluster:
    cluster = Cluster(object())
    cluster.apis = {name: _Api(calls, made or {}) for name in ("CoreV1Api", "BatchV1Api", "AppsV1Api")}
    return cluster


@pytest.mark.parametrize("multinode", [False, True])
def test_a_refused_create_deletes_what_this_launch_created_and_names_the_object(tmp_path: Path,
                                                                                multinode: bool) -> None:
    calls: list[str] = []
    backend = KubernetesBackend(_config(gke=KubernetesContext(namespace="ml", image_has_skyflow=True)),
                                client_factory=lambda context: object())
    backend._clusters["gke"] = _cluster_with(calls)
    launch = _launch(tmp_path, num_nodes=2 if multinode else 1)
    with pytest.raises(BackendError, match=r"^Kubernetes: creating Job sf-[a-z0-9-]+ failed: Unprocessable Entity "
                                           r"\(spec\.template: Invalid value\)$") as caught:
        backend.launch(replace(launch, env={"HF_TOKEN": "s3cr3t"}))  # the secret makes a Secret first
    assert caught.value.stage == "train"
    kinds = ["secret", "service", "job"] if multinode else ["secret", "job"]
    assert [c.split()[0] for c in calls if c.startswith("create")] == [f"create_namespaced_{k}" for k in kinds]
    # the refused Job is not there (read: 404); what was created is deleted, newest first
    assert [c.split()[0] for c in calls if not c.startswith("create")] == (
        ["read_namespaced_job"] + [f"delete_namespaced_{k}" for k in reversed(kinds[:-1])])
    created = [c.split()[1] for c in calls if c.startswith("create")]
    assert [c.split()[1] for c in calls if c.startswith("delete")] == list(reversed(created[:-1]))


@pytest.mark.parametrize(("made", "deleted"), [({}, []), ({"deployment": "another-attempt"}, []),
                                               ({"deployment": "ours"}, ["delete_namespaced_deployment"])],
                         ids=["not-made", "another-attempts", "made-before-the-reset"])
def test_a_service_create_that_fails_deletes_the_deployment_only_where_the_server_made_it_for_this_attempt(
        tmp_path: Path, made: dict[str, str], deleted: list[str]) -> None:
    """A reset connection may come after the server made the object: it is deleted if it carries this
    attempt's token; the Service, never asked for, is not touched."""
    from skyflow.processes import attempt_token

    calls: list[str] = []
    launch = _launch(tmp_path, spec={"resources": {"ports": 8000}, "service": {"readiness_probe": "/health"}})
    backend = KubernetesBackend(_config(gke=KubernetesContext(namespace="ml", image_has_skyflow=True)),
                                client_factory=lambda context: object())
    backend._clusters["gke"] = _cluster_with(calls, {k: attempt_token(launch.log_path) if v == "ours" else v
                                                     for k, v in made.items()})

    def refuse_deployment(*args: Any, **kwargs: Any) -> None:
        calls.append("create_namespaced_deployment")
        raise RuntimeError("connection reset by peer")

    backend._clusters["gke"].apis["AppsV1Api"].create_namespaced_deployment = refuse_deployment
    with pytest.raises(BackendError, match=r"^Kubernetes: creating Deployment sf-[a-z0-9-]+ failed: "
                                           r"connection reset by peer$"):
        backend.serve(launch)
    assert [c.split()[0] for c in calls] == ["create_namespaced_deployment", "read_namespaced_deployment", *deleted]


def test_without_the_kubernetes_client_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(BackendError, match=r"^the Kubernetes backend needs the official client: "
                                           r"pip install 'kubernetes==37.0.1'"):
        default_client_factory(None)("gke")


def test_a_context_that_cannot_be_opened_names_it_and_the_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(BackendError, match=rf"^cannot open Kubernetes context 'gke' from {kubeconfig}: .*gke"):
        default_client_factory(str(kubeconfig))("gke")


def test_a_malformed_result_is_a_backend_error_naming_where_it_is(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"), create=True)
    store.write_bytes(result_key("r1", "train", 1), b'{"outputs": []}')
    cluster = FakeCluster([_job_status(("Complete", "True", None, None))], [])
    with pytest.raises(BackendError, match=r"^stage 'train'\'s result at .*/runs/r1/train/attempt-1/result\.json is "
                                           r"malformed: ") as raised:
        _handle(tmp_path, cluster).wait()
    assert (raised.value.stage, raised.value.backend) == ("train", "kubernetes")
    assert cluster.deleted == [["sf-secret", "sf-job"]]
