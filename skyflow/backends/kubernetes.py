"""The Kubernetes backend: create a stage's Job (or Deployment), watch it, stream its logs, clean up.

Manifests come from :mod:`skyflow.backends.kubernetes_manifests`; this module talks to the API
server through the official ``kubernetes`` client (the ``k8s`` extra), imported on first use, and
ships skyflow's code package to the store for pods whose image lacks skyflow.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.backends.base import Capacity, Leftover, StageExit, StageHandle, StageLaunch
from skyflow.backends.kubernetes_manifests import (
    ATTEMPT_ANNOTATION,
    INSTALL_CONTAINER,
    MANAGED_BY,
    STAGE_CONTAINER,
    PodPlan,
    code_package_commands,
    job_manifests,
    redacted,
    service_manifests,
)
from skyflow.backends.masking import LogPump, mask_secrets
from skyflow.backends.remote_stage import (
    WRAPPER_MODULE,
    code_package_for,
    commit_workdir,
    node_spec,
    placeholder_urls,
    read_result,
    remote_store_uri,
    render_yaml,
    ship_code_package,
    split_env,
    store_for_render,
)
from skyflow.config import KubernetesContext, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.processes import attempt_token

if TYPE_CHECKING:
    from skyflow.backends.registry import BackendContext

DEFAULT_CONTEXT = "default"
POLL_S = 1.0
GONE_TIMEOUT_S = 120.0
MANAGED = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def context_name(infra: str | None) -> str:
    """`kubernetes/CTX` or `k8s/CTX` -> CTX; plain `kubernetes` -> the kubeconfig's current context."""
    _, _, name = str(infra or "").partition("/")
    return name or DEFAULT_CONTEXT


def _settings(config: SkyflowConfig, name: str) -> KubernetesContext:
    return config.kubernetes.contexts.get(name) or KubernetesContext()


def stage_image(launch: StageLaunch, settings: KubernetesContext) -> tuple[str, bool]:
    """(image, whether it has skyflow): the stage's `image_id: docker:IMAGE` (for this context, when it maps
    contexts to images), else the context's image. A stage's own image is taken to lack skyflow."""
    image_id = launch.spec.resources.image_id
    if isinstance(image_id, dict):
        image_id = image_id.get(context_name(launch.placement.infra))
    if image_id is None:
        return settings.image, settings.image_has_skyflow
    if not image_id.startswith("docker:"):
        raise BackendError(f"stage {launch.stage!r} names image_id {image_id!r}, which is not a container image; "
                           f"on Kubernetes write `image_id: docker:IMAGE` (e.g. docker:python:3.11-slim)",
                           stage=launch.stage, backend="kubernetes")
    return image_id.removeprefix("docker:"), False



def _translated(action: str, stage: str) -> Any:
    """Turn the client's errors into a BackendError naming what was being done."""
    @contextlib.contextmanager
    def scope() -> Any:
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            reason = getattr(exc, "reason", None) or exc
            body = getattr(exc, "body", None)
            raise BackendError(f"Kubernetes: {action} failed: {reason}{f' ({body})' if body else ''}",
                               stage=stage, backend="kubernetes") from exc
    return scope()


def default_client_factory(kubeconfig: str | None) -> Callable[[str], Any]:
    def open_client(context: str) -> Any:
        try:
            from kubernetes import config as kconfig
        except ImportError as exc:
            raise BackendError("the Kubernetes backend needs the official client: "
                               "pip install 'kubernetes==37.0.1' (the k8s extra of skyflow-llmops)",
                               backend="kubernetes") from exc
        try:
            return kconfig.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=None if context == DEFAULT_CONTEXT else context)
        except Exception as exc:
            raise BackendError(f"cannot open Kubernetes context {context!r} from "
                               f"{kubeconfig or '~/.kube/config'}: {exc}", backend="kubernetes") from exc
    return open_client


# Each kind an attempt creates: its API group and the noun of its calls (create_namespaced_job, ...).
_KIND_CALLS = {"Secret": ("CoreV1Api", "secret"), "Service": ("CoreV1Api", "service"),
               "Job": ("BatchV1Api", "job"), "Deployment": ("AppsV1Api", "deployment")}
KINDS = tuple(_KIND_CALLS)  # what an attempt creates


def _kind_call(verb: str, kind: str) -> tuple[str, str]:
    """(API group, method) of ``verb`` (create, read, list, delete) for ``kind``."""
    api, noun = _KIND_CALLS[kind]
    return api, f"{verb}_namespaced_{noun}"


class _TakenName(BackendError):
    """A name the launch needs is held by an object that is not this attempt's."""


def _attempt_mark(obj: Any) -> str | None:
    """The attempt token an object from the API server carries (`ATTEMPT_ANNOTATION`), if any."""
    return (obj.metadata.annotations or {}).get(ATTEMPT_ANNOTATION)


class Cluster:
    """One API client and the few calls the backend makes."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.apis = {n: getattr(client, n)(api_client) for n in ("CoreV1Api", "BatchV1Api", "AppsV1Api")}

    def create(self, docs: list[dict[str, Any]], stage: str, attempt: str) -> None:
        """Create ``docs`` in order, or none of them: on an error, what this call created is deleted (never
        an object that was there before it). An object of the same name that carries ``attempt``, the
        token of this very attempt, was created by a runner that died before recording it: it is deleted
        and created afresh. One that does not is another's, and stops the launch."""
        created: list[dict[str, Any]] = []
        for doc in docs:
            try:
                self._create_one(doc, stage, attempt)
            except BackendError as exc:
                # a call that failed (a timeout, a reset) after the server made the object
                if not isinstance(exc, _TakenName) and self._carries(doc, attempt):
                    created.append(doc)
                self.delete(created)
                raise
            created.append(doc)

    def _carries(self, doc: Mapping[str, Any], attempt: str) -> bool:
        """Whether the server has ``doc`` and it carries ``attempt`` (False where that cannot be read)."""
        try:
            existing = self.read(doc)
        except BackendError:
            return False
        return existing is not None and _attempt_mark(existing) == attempt

    def _create_one(self, doc: dict[str, Any], stage: str, attempt: str) -> None:
        api, method = _kind_call("create", doc["kind"])
        meta = doc["metadata"]
        action = f"creating {doc['kind']} {meta['name']}"
        try:
            with _translated(action, stage):
                getattr(self.apis[api], method)(meta["namespace"], doc)
            return
        except BackendError as exc:
            if getattr(exc.__cause__, "status", None) != 409:
                raise
        existing = self.read(doc)
        theirs = _attempt_mark(existing) if existing is not None else None
        if existing is not None and theirs != attempt:
            labels = existing.metadata.labels or {}
            who = (f"it is run {labels.get('skyflow.dev/run', '?')}'s, stage {labels.get('skyflow.dev/stage', '?')}, "
                   "from another skyflow home" if theirs else "skyflow did not make it")
            raise _TakenName(
                f"Kubernetes: {doc['kind']} {meta['name']} already exists in namespace {meta['namespace']} and is not "
                f"this attempt's ({who}). Run again with another --run-id, or delete it if it is a leftover: "
                f"kubectl delete {doc['kind'].lower()} {meta['name']} -n {meta['namespace']}",
                stage=stage, backend="kubernetes")
        self.delete([doc], propagation="Foreground")
        self.wait_gone(doc)
        with _translated(action, stage):
            getattr(self.apis[api], method)(meta["namespace"], doc)

    def read(self, doc: Mapping[str, Any]) -> Any:
        """The object ``doc`` names as the API server has it, or None once it is gone."""
        api, method = _kind_call("read", doc["kind"])
        try:
            return getattr(self.apis[api], method)(doc["metadata"]["name"], doc["metadata"]["namespace"])
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise BackendError(f"Kubernetes: reading {doc['kind']} {doc['metadata']['name']} failed: "
                               f"{getattr(exc, 'reason', None) or exc}", backend="kubernetes") from exc

    def wait_gone(self, doc: Mapping[str, Any], timeout_s: float = GONE_TIMEOUT_S) -> None:
        """Until the API server no longer has ``doc`` (deletion finishes after its finalizers)."""
        deadline = time.monotonic() + timeout_s
        while self.read(doc) is not None:
            if time.monotonic() > deadline:
                raise BackendError(f"Kubernetes: {doc['kind']} {doc['metadata']['name']} was still there "
                                   f"{timeout_s:g} s after it was deleted", backend="kubernetes")
            time.sleep(0.2)

    def owned_by(self, attempt: str, namespace: str) -> list[dict[str, Any]]:
        """What carries the token ``attempt`` in ``namespace``, as docs `delete` takes."""
        found = []
        for kind in KINDS:
            api, method = _kind_call("list", kind)
            for item in getattr(self.apis[api], method)(namespace, label_selector=MANAGED).items:
                if _attempt_mark(item) == attempt:
                    found.append({"kind": kind, "metadata": {"name": item.metadata.name, "namespace": namespace}})
        return found

    def delete(self, docs: list[dict[str, Any]], propagation: str = "Background") -> None:
        """Delete in reverse order; what is already gone is fine (cleanup must not fail a stage).
        ``Foreground``: a Job stays until its pods are gone, so that one made again under its name
        never sees them."""
        for doc in reversed(docs):
            api, method = _kind_call("delete", doc["kind"])
            with contextlib.suppress(Exception):
                getattr(self.apis[api], method)(doc["metadata"]["name"], doc["metadata"]["namespace"],
                                                propagation_policy=propagation)

    def job_status(self, name: str, namespace: str) -> Any:
        return self.apis["BatchV1Api"].read_namespaced_job_status(name, namespace).status

    def pods_of(self, job: str, namespace: str) -> list[Any]:
        pods = self.apis["CoreV1Api"].list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return [p for p in pods if (p.metadata.labels or {}).get("job-name") == job]

    def log_stream(self, pod: str, namespace: str) -> Any:
        return self.apis["CoreV1Api"].read_namespaced_pod_log(pod, namespace, container=STAGE_CONTAINER,
                                                              follow=True, _preload_content=False)

    def log_text(self, pod: str, namespace: str, container: str) -> str:
        response = self.apis["CoreV1Api"].read_namespaced_pod_log(pod, namespace, container=container,
                                                                  _preload_content=False)
        return bytes(response.read()).decode("utf-8", "replace")

    def ready_replicas(self, name: str, namespace: str) -> int:
        status = self.apis["AppsV1Api"].read_namespaced_deployment_status(name, namespace).status
        return int(getattr(status, "ready_replicas", None) or 0)  # no status until the controller writes one


def remote_handle(context: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What a later process needs to find (and delete) what this attempt created: JSON-safe."""
    return {"backend": "kubernetes", "context": context,
            "objects": [{"kind": d["kind"], "name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"]}
                        for d in docs]}


def _docs_of(handle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": o["kind"], "metadata": {"name": o["name"], "namespace": o["namespace"]}}
            for o in handle.get("objects", [])]


def _finished(status: Any, completions: int) -> tuple[bool, bool, str]:
    """(done, ok, reason) from a Job's status (None until the controller first writes one)."""
    if status is None:
        return False, False, ""
    for cond in status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "SuccessCriteriaMet"):
            return True, True, ""
        if cond.status == "True" and cond.type in ("Failed", "FailureTarget"):
            return True, False, f"{cond.reason or 'Failed'}: {cond.message or ''}".rstrip(": ")
    if (status.succeeded or 0) >= completions:
        return True, True, ""
    if status.failed:
        return True, False, f"{status.failed} pod(s) failed"
    return False, False, ""


def _exit_code(pods: list[Any]) -> int:
    for pod in pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            term = cs.state.terminated if cs.state else None
            if term is not None and term.exit_code:
                return int(term.exit_code)
    return 1


def _disruption(pods: list[Any], completions: int) -> tuple[int, str] | None:
    """(negative signal, why) when the failed Job's pods were taken away from outside — evicted by the
    kubelet, marked DisruptionTarget (preemption, a drained or lost node), or deleted — else None."""
    for pod in pods:
        status = pod.status
        if status is None:
            continue
        why = f"pod {pod.metadata.name} was evicted: {status.message}" if status.reason == "Evicted" else None
        for cond in status.conditions or []:
            if why is None and cond.type == "DisruptionTarget" and cond.status == "True":
                why = f"pod {pod.metadata.name} was disrupted ({cond.reason}): {cond.message}"
        if why is not None:
            code = _exit_code([pod])
            return (-(code - 128) if 128 < code < 128 + signal.NSIG else -int(signal.SIGKILL)), why
    # A Job keeps a pod that failed; pods missing while none of the others failed were deleted from outside.
    if len(pods) < completions and not any(pod.status is not None and pod.status.phase == "Failed" for pod in pods):
        return -int(signal.SIGKILL), f"{completions - len(pods)} of the Job's {completions} pod(s) were deleted"
    return None


def _install_failures(pods: list[Any]) -> list[tuple[str, int]]:
    """(pod, exit code) of each pod whose code package install (its init container) failed."""
    failed = []
    for pod in pods:
        for cs in (pod.status.init_container_statuses or []) if pod.status else []:
            term = cs.state.terminated if cs.state else None
            if cs.name == INSTALL_CONTAINER and term is not None and term.exit_code:
                failed.append((str(pod.metadata.name), int(term.exit_code)))
    return failed


_CANCELLED = StageExit(-15, "cancelled", cancelled=True)


@dataclass
class KubernetesStageHandle:
    """One Job: watched until it finishes, its pods' logs copied to the stage log, then deleted."""

    cluster: Cluster
    launch: StageLaunch
    docs: list[dict[str, Any]]
    store_uri: str
    result_key: str
    context: str
    on_line: Callable[[str, str], None] | None = None
    poll_s: float = POLL_S
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _pumps: dict[str, LogPump] = field(default_factory=dict)

    @property
    def process_groups(self) -> list[int]:
        return []  # nothing runs on this machine

    @property
    def job(self) -> dict[str, Any]:
        return self.docs[-1]

    @property
    def remote(self) -> dict[str, Any]:
        return remote_handle(self.context, self.docs)

    def wait(self) -> StageExit:
        self.launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.launch.log_path, "ab") as log:
            try:
                return self._wait(log)
            finally:
                self.cluster.delete(self.docs)
                for pump in self._pumps.values():
                    pump.join(timeout=5)

    def _wait(self, log: io.BufferedWriter) -> StageExit:
        name, namespace = self.job["metadata"]["name"], self.job["metadata"]["namespace"]
        deadline = time.monotonic() + self.launch.timeout_s if self.launch.timeout_s else None
        while True:
            if self._cancelled.is_set():
                return _CANCELLED
            try:
                with _translated(f"watching Job {name}", self.launch.stage):
                    status = self.cluster.job_status(name, namespace)
                    pods = self.cluster.pods_of(name, namespace)
            except BackendError:
                if self._cancelled.is_set():  # cancel() deleted the Job while this read it
                    return _CANCELLED
                raise
            self._follow_logs(pods, namespace, log)
            done, ok, reason = _finished(status, int(self.launch.num_nodes))
            if done:
                return self._result(ok, reason, pods, log)
            if deadline is not None and time.monotonic() > deadline:
                return StageExit(-9, f"timed out after {self.launch.timeout_s:g} s", timed_out=True)
            self._cancelled.wait(self.poll_s)

    def _result(self, ok: bool, reason: str, pods: list[Any], log: io.BufferedWriter) -> StageExit:
        if not ok:
            timed_out = "DeadlineExceeded" in reason
            install = _install_failures(pods)
            if install and not timed_out:
                return self._install_failed(install, log)
            disrupted = None if timed_out else _disruption(pods, int(self.launch.num_nodes))
            if disrupted is not None:  # killed from outside: a negative code, as a preempted local stage gets
                return StageExit(disrupted[0], f"{disrupted[1]} ({reason})")
            return StageExit(-9 if timed_out else _exit_code(pods), reason, timed_out=timed_out)
        with _translated("reading the stage result", self.launch.stage):
            outputs = read_result(self.store_uri, self.result_key, stage=self.launch.stage, backend="kubernetes")
        if outputs is None:
            return StageExit(1, f"the Job succeeded but wrote no result to {self.store_uri}/{self.result_key}")
        return StageExit(0, outputs=outputs)

    def _install_failed(self, failures: list[tuple[str, int]], log: io.BufferedWriter) -> StageExit:
        """The init container's output goes to the stage log: the stage itself never started."""
        namespace = self.job["metadata"]["namespace"]
        for pod, _ in failures:
            with contextlib.suppress(Exception):  # the log is a courtesy; the exit code is the verdict
                text = self.cluster.log_text(pod, namespace, INSTALL_CONTAINER)
                for line in text.splitlines():
                    log.write((mask_secrets(f"({INSTALL_CONTAINER}) {line}", self.launch.secret_values) + "\n")
                              .encode())
        log.flush()
        pod, code = failures[0]
        return StageExit(code, f"installing skyflow's code package failed with exit code {code} (the init "
                               f"container's output is in the stage log; `kubectl logs {pod} -c {INSTALL_CONTAINER} "
                               f"-n {namespace}`)")

    def _follow_logs(self, pods: list[Any], namespace: str, log: io.BufferedWriter) -> None:
        for pod in pods:
            pod_name = pod.metadata.name
            phase = pod.status.phase if pod.status else None
            if pod_name in self._pumps or phase not in ("Running", "Succeeded", "Failed"):
                continue
            try:
                stream = self.cluster.log_stream(pod_name, namespace)
            except Exception:  # not ready for logs yet; try again on the next poll
                continue
            index = (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")
            prefix = f"(node {index}) " if self.launch.num_nodes > 1 and index is not None else ""
            listener = (lambda line, s=self.launch.stage, cb=self.on_line: cb(s, line)) if self.on_line else None
            pump = LogPump(stream, log, self.launch.secret_values, prefix, listener)
            pump.start()
            self._pumps[pod_name] = pump

    def cancel(self) -> None:
        self._cancelled.set()
        self.cluster.delete(self.docs)


@dataclass
class KubernetesService:
    """A service stage's Deployment and Service; ready once the Deployment's replicas are."""

    cluster: Cluster
    docs: list[dict[str, Any]]
    replicas: int
    endpoint: str
    context: str
    poll_s: float = POLL_S

    @property
    def remote(self) -> dict[str, Any]:
        return remote_handle(self.context, self.docs)

    @property
    def process_groups(self) -> list[int]:
        return []  # nothing runs on this machine

    def wait_ready(self, cancel: threading.Event, timeout_s: float) -> str | None:
        deployment = next(d for d in self.docs if d["kind"] == "Deployment")
        name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        deadline = time.monotonic() + timeout_s
        while not cancel.is_set():
            if self.cluster.ready_replicas(name, namespace) >= self.replicas:
                return None
            if time.monotonic() > deadline:
                return f"not ready after {timeout_s:g} s"
            cancel.wait(self.poll_s)
        return "cancelled"

    def stop(self) -> None:
        self.cluster.delete(self.docs)


class KubernetesBackend:
    """Runs each stage as a Job in the context its placement names."""

    name = "kubernetes"

    def __init__(self, config: SkyflowConfig | None = None, on_line: Callable[[str, str], None] | None = None,
                 client_factory: Callable[[str], Any] | None = None, poll_s: float = POLL_S) -> None:
        self.config = config or SkyflowConfig()
        self._open_client = client_factory or default_client_factory(self.config.kubernetes.kubeconfig)
        self._clusters: dict[str, Cluster] = {}
        self.on_line = on_line
        self.poll_s = poll_s

    def capacity(self) -> Capacity:
        contexts = self.config.kubernetes.contexts
        gpus: dict[str, int] = {}
        for ctx in contexts.values():
            for gpu, count in ctx.accelerators.items():
                gpus[gpu] = gpus.get(gpu, 0) + count
        return Capacity(cpus=sum(c.cpus or 0 for c in contexts.values()),
                        memory_gb=sum(c.memory_gb or 0 for c in contexts.values()), gpus=gpus, max_parallel=64)

    def _cluster(self, context: str) -> Cluster:
        if context not in self._clusters:
            self._clusters[context] = Cluster(self._open_client(context))
        return self._clusters[context]

    def manifests(self, launch: StageLaunch, store_uri: str, workdir_ref: ArtifactRecord | None = None,
                  code_urls: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every manifest this launch creates (Secret values included: never print these).

        ``code_urls`` are the code package's signed URLs (``ship_code_package``); without them the
        init container shows placeholders, as a dry run does.
        """
        settings = _settings(self.config, context_name(launch.placement.infra))
        image, has_skyflow = stage_image(launch, settings)
        command: tuple[str, ...] = (settings.python, "-m", WRAPPER_MODULE)
        install: tuple[str, ...] = ()
        if not has_skyflow:
            package = code_package_for(store_uri)
            urls = code_urls or placeholder_urls(package, store_uri)
            install, command = code_package_commands(package, urls, settings.python)
        plain, secret = split_env(launch)
        plan = PodPlan(namespace=settings.namespace, image=image, accelerator_label_key=settings.accelerator_label_key,
                       spot_node_selector=settings.spot_node_selector, spot_tolerations=settings.spot_tolerations,
                       plain_env=plain, secret_names=tuple(secret), node_spec=node_spec(launch, store_uri, workdir_ref),
                       command=command, install_command=install, store_secret=settings.store_secret)
        build = service_manifests if launch.spec.service is not None else job_manifests
        return build(launch, plan, secret)

    def render(self, launch: StageLaunch) -> str:
        """The manifests as one multi-document YAML, Secret values redacted (for --dry-run).

        Nothing is uploaded or signed; the code package is built here (about 2 s, once per process)
        so the init container shows the digest and wheels a launch would install.
        """
        store, note = store_for_render(launch, self.name)
        return note + render_yaml(redacted(self.manifests(launch, store)))

    def _prepare(self, launch: StageLaunch) -> tuple[Cluster, str, list[dict[str, Any]]]:
        store = remote_store_uri(launch, self.name)  # first: nothing is built, uploaded or created without it
        settings = _settings(self.config, context_name(launch.placement.infra))
        _, has_skyflow = stage_image(launch, settings)
        urls = None if has_skyflow else ship_code_package(
            launch, store, self.name, "use an image built with skyflow's code package (its wheelhouse): "
            "`image_has_skyflow: true` on the context")
        cluster = self._cluster(context_name(launch.placement.infra))
        docs = self.manifests(launch, store, commit_workdir(launch, store), urls)
        return cluster, store, docs

    def launch(self, launch: StageLaunch) -> StageHandle:
        context = context_name(launch.placement.infra)
        cluster, store, docs = self._prepare(launch)
        cluster.create(docs, launch.stage, attempt_token(launch.log_path))
        spec_key = node_spec(launch, store)["result_key"]
        return KubernetesStageHandle(cluster, launch, docs, store, spec_key, context, self.on_line, self.poll_s)

    def serve(self, launch: StageLaunch) -> KubernetesService:
        """Create the service stage's Deployment and Service; `wait_ready` then tells when it serves."""
        from skyflow.backends.kubernetes_manifests import service_port

        cluster, _, docs = self._prepare(launch)
        cluster.create(docs, launch.stage, attempt_token(launch.log_path))
        service = next(d for d in docs if d["kind"] == "Service")
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        meta = service["metadata"]
        endpoint = f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:{service_port(launch.spec)}"
        return KubernetesService(cluster, docs, int(deployment["spec"]["replicas"]), endpoint,
                                 context_name(launch.placement.infra), self.poll_s)

    def stop_service(self, leftover: Leftover) -> None:
        """Delete a service stage's Deployment, Service and Secret (`skyflow down`), from its stored handle."""
        if leftover.remote:
            self._cluster(str(leftover.remote["context"])).delete(_docs_of(leftover.remote))

    def abandon(self, leftover: Leftover) -> None:
        """Delete the Job (and its Service and Secret) an attempt of a dead runner left (`skyflow resume`,
        `skyflow cancel`): those its handle names, or, for a runner that died between creating them and
        recording the handle, those that carry the token of the attempt's log path. Best effort: what
        cannot be reached now is found again by name when the attempt is launched afresh (`Cluster.create`)."""
        if leftover.remote:
            self._cluster(str(leftover.remote["context"])).delete(_docs_of(leftover.remote))
        elif leftover.log_path and leftover.infra:
            context = context_name(leftover.infra)
            with contextlib.suppress(BackendError):
                cluster = self._cluster(context)
                with _translated("listing what the attempt left", ""):
                    left = cluster.owned_by(attempt_token(leftover.log_path), _settings(self.config, context).namespace)
                cluster.delete(left)


def from_context(context: BackendContext) -> KubernetesBackend:
    # extra["kubernetes_client_factory"]: open API clients another way (in-cluster config, a test server).
    return KubernetesBackend(context.config, on_line=context.on_line,
                             client_factory=context.extra.get("kubernetes_client_factory"))
