"""kmock's ``KubernetesEmulator`` served from a thread, and the Job controller and kubelet it lacks.

No Kubernetes API server can run where these tests run (no container runtime), so the emulator
stands in: a stateful in-memory API server over HTTP that stores, lists, watches and deletes objects,
without controllers and ignoring label selectors. :class:`JobController` plays the Job controller and
the kubelet through the official client: it runs each pod's container command (the stage wrapper, as
the image would) as a local process with the pod's env and Secret, serves the output as the pod's log,
and patches pod and Job status the way Kubernetes does. Shared by the Kubernetes backend tests and
the mixed-backend pipeline test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMESPACE = "ml"
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
