"""kmock's ``KubernetesEmulator`` served from a thread, and the Job controller and kubelet it lacks.

No Kubernetes API server can run where these tests run (no container runtime), so the emulator
stands in: a stateful in-memory API server over HTTP that stores, lists, watches and deletes objects,
without controllers and ignoring label selectors. :class:`JobController` plays the Job controller and
the kubelet through the official client: it runs each pod's init containers, then its stage container,
as local processes with the pod's env, Secrets and volumes, serves their output as the containers'
logs, and patches pod and Job status the way Kubernetes does. An image without skyflow is played by a
bare interpreter in a clean environment, so a pod's init container must really install the code
package for its stage to run. Shared by the Kubernetes backend tests and the mixed-backend pipeline test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
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

def bare_python() -> str:
    """A python3 of this interpreter's minor version with venv and ensurepip, outside any virtualenv:
    what an image like python:3.11-slim has."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3")):
        if not os.path.exists(candidate):
            continue
        probe = subprocess.run([candidate, "-I", "-c", "import sys, venv, ensurepip; "
                                "print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
    raise RuntimeError(f"no bare Python {want} with venv and ensurepip (neither /usr/bin/python3 nor "
                       f"{sys.base_prefix}/bin/python3): install python3-venv (tests/services/install-system.sh)")


@dataclass
class JobController:
    """Runs each Job's pods as local processes and reports them back through the API.

    A pod runs its init containers in order, then its stage container; each container's command runs
    as written, with ``python``/``python3`` on PATH standing for the image's interpreter. Images in
    ``skyflow_images`` have skyflow (this test environment's interpreter, with ``node_env``); any other
    image is a bare interpreter under a clean environment (``env -i`` with only PATH=/usr/bin:/bin,
    PIP_NO_INDEX=1, PYTHONNOUSERSITE=1, a HOME of the pod's own, ``node_env`` minus its PATH, and the
    container's env and Secrets). Each emptyDir volume is a directory of the pod's, and an env value
    under a container's mount path points into it. A pod is Pending while its init containers run and
    Running while its stage container runs, whose log is served live: `follow=true` streams the output
    as the process writes it and ends when the process does, as the kubelet does. Then the pod turns
    Succeeded/Failed with the container's exit code; the Job gets the Complete or Failed condition
    Kubernetes would set. Deleting a Job kills its processes and deletes its pods, as the garbage collector would
    with background propagation.
    """

    emulator: Any
    root: Path
    node_env: dict[str, str]
    skyflow_images: frozenset[str] = frozenset()
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    stages_started: dict[str, int] = field(default_factory=dict)  # stage containers started, per Job
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)  # the condition each Job ended with
    seen: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.api = api_client(str(self.emulator.url))
        self.batch: Any = client.BatchV1Api(self.api)
        self.core: Any = client.CoreV1Api(self.api)
        self._bare = bare_python()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="job-controller")
        self.thread.start()

    def _watch(self) -> None:
        """Watch Jobs as a controller does: list first (the state between two watches is never
        missed: a Job created or deleted while no watch was open is found by the list), then watch
        for changes until the watch times out, and list again."""
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                self._reconcile(self.batch.list_namespaced_job(NAMESPACE).items)
                stream = watch.Watch()  # type: ignore[no-untyped-call]  # kubernetes.watch is unannotated
                for event in stream.stream(self.batch.list_namespaced_job, NAMESPACE, _request_timeout=1):  # type: ignore[no-untyped-call]
                    job = event["object"]
                    if event["type"] == "ADDED":
                        self._adopt(job)
                    elif event["type"] == "DELETED":
                        self._collect(job.metadata.name)
            except Exception:  # the watch timed out or the server went away: list and watch again
                continue

    def _reconcile(self, jobs: list[Any]) -> None:
        """Start every listed Job not yet seen; collect every running Job no longer listed."""
        for job in jobs:
            self._adopt(job)
        listed = {job.metadata.name for job in jobs}
        with self._lock:
            gone = [name for name in self.procs if name not in listed]
        for name in gone:
            self._collect(name)

    def _adopt(self, job: Any) -> None:
        with self._lock:
            if job.metadata.name in self.seen:
                return
            self.seen.append(job.metadata.name)
        threading.Thread(target=self._run_job, args=(job,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            running = [proc for procs in self.procs.values() for proc in procs]
        for proc in running:
            if proc.poll() is None:
                proc.kill()
        self.thread.join(timeout=10)

    # -- one pod ----------------------------------------------------------------------------------

    def _image_bin(self, image: str) -> Path:
        """A directory whose python and python3 are the image's interpreter."""
        has_skyflow = image in self.skyflow_images
        path = self.root / ("image-with-skyflow" if has_skyflow else "image-bare") / "bin"
        path.mkdir(parents=True, exist_ok=True)
        for name in ("python", "python3"):
            shim = path / name
            if not shim.exists():
                shim.write_text(f'#!/bin/sh\nexec "{sys.executable if has_skyflow else self._bare}" "$@"\n')
                shim.chmod(0o755)
        return path

    def _container_env(self, container: Any, pod_dir: Path, index: int | None) -> dict[str, str]:
        bin_dir = self._image_bin(container.image)
        outside = {k: v for k, v in self.node_env.items() if k != "PATH"}
        if container.image in self.skyflow_images:
            env = {**outside, "PATH": f"{bin_dir}:{self.node_env.get('PATH', '/usr/bin:/bin')}"}
        else:
            (pod_dir / "home").mkdir(parents=True, exist_ok=True)
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1",
                   "HOME": str(pod_dir / "home"), **outside}
        for source in container.env_from or []:
            secret = self.core.read_namespaced_secret(source.secret_ref.name, NAMESPACE)
            env.update(secret.string_data or {})  # kmock keeps stringData as written
        env.update({e.name: e.value for e in container.env or []})
        for mount in container.volume_mounts or []:  # the pod's volumes are directories of its own
            local = pod_dir / mount.name
            local.mkdir(parents=True, exist_ok=True)
            for key, value in env.items():
                if value == mount.mount_path or value.startswith(mount.mount_path.rstrip("/") + "/"):
                    env[key] = str(local) + value[len(mount.mount_path.rstrip("/")):]
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        return env

    def _start(self, job: str, container: Any, env: dict[str, str], cwd: Path,
               stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes] | None:
        """Start one container's command, unless its Job was deleted meanwhile."""
        with self._lock:
            if job not in self.procs:
                return None
            proc = subprocess.Popen(list(container.command), env=env, cwd=cwd, stdout=stdout,
                                    stderr=subprocess.STDOUT)
            self.procs[job].append(proc)
            return proc

    def _run_pod(self, job: Any, pod: str, index: int | None) -> tuple[int, dict[str, Any]] | None:
        """Run the pod's containers; (exit code, its status) or None when the Job was deleted meanwhile."""
        name, spec = job.metadata.name, job.spec.template.spec
        pod_dir = self.root / pod
        init_statuses = []
        for container in spec.init_containers or []:
            proc = self._start(name, container, self._container_env(container, pod_dir, index), pod_dir)
            if proc is None:
                return None
            output, _ = proc.communicate()
            self._serve_log(pod, container.name, output)
            init_statuses.append(_status(container.name, proc.returncode))
            if proc.returncode != 0:
                waiting = {"name": spec.containers[0].name, "image": "skyflow", "imageID": "", "ready": False,
                           "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
                return proc.returncode, {"phase": "Failed", "initContainerStatuses": init_statuses,
                                         "containerStatuses": [waiting]}
        container = spec.containers[0]
        log_path = pod_dir / f"{container.name}.log"
        with log_path.open("wb") as out:
            proc = self._start(name, container, self._container_env(container, pod_dir, index), pod_dir, stdout=out)
        if proc is None:
            return None
        with self._lock:
            self.stages_started[name] = self.stages_started.get(name, 0) + 1
        self._serve_live_log(pod, container.name, log_path, proc)
        running = {"name": container.name, "image": "skyflow", "imageID": "", "ready": True, "restartCount": 0,
                   "state": {"running": {}}}
        with contextlib.suppress(Exception):  # the Job may be deleted meanwhile
            self.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": {
                "phase": "Running", "initContainerStatuses": init_statuses, "containerStatuses": [running]}})
        proc.wait()
        return proc.returncode, {"phase": "Succeeded" if proc.returncode == 0 else "Failed",
                                 "initContainerStatuses": init_statuses,
                                 "containerStatuses": [_status(container.name, proc.returncode)]}

    def _serve_log(self, pod: str, container: str, output: bytes) -> None:
        self.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log?container={container}"] << output

    def _serve_live_log(self, pod: str, container: str, path: Path, proc: subprocess.Popen[bytes]) -> None:
        """The container's log as the kubelet serves it: what it wrote so far, or with `follow=true`
        everything as it is written until the process ends."""

        async def follow() -> AsyncIterator[bytes]:
            yield b""  # the response starts at once, also for a container that prints nothing
            with path.open("rb") as log:
                while True:
                    ended = proc.poll() is not None  # read once more after the end: nothing is lost
                    chunk = log.read()
                    if chunk:
                        yield chunk
                    elif ended:
                        return
                    else:
                        await asyncio.sleep(0.02)

        def respond(request: Any) -> Any:
            if str(request.params.get("follow", "")).lower() == "true":
                return follow()
            return path.read_bytes()

        self.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log?container={container}"] << respond

    # -- one Job ----------------------------------------------------------------------------------

    def _run_job(self, job: Any) -> None:
        name = job.metadata.name
        nodes = job.spec.completions or 1
        indexed = job.spec.completion_mode == "Indexed"
        pods = [f"{name}-{i}-pod" if nodes > 1 else f"{name}-pod" for i in range(nodes)]
        for index, pod in enumerate(pods):
            (self.root / pod).mkdir(parents=True, exist_ok=True)
            self.core.create_namespaced_pod(NAMESPACE, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": NAMESPACE,
                             "labels": {**job.spec.template.metadata.labels, "job-name": name},
                             "annotations": {INDEX_ANNOTATION: str(index)} if nodes > 1 else {}},
                "spec": {"containers": [{"name": "stage", "image": "skyflow"}]},
                "status": {"phase": "Pending"}})
        with self._lock:
            self.procs[name] = []
        results: list[tuple[int, dict[str, Any]] | None] = [None] * nodes

        def run(i: int) -> None:
            results[i] = self._run_pod(job, pods[i], i if indexed else None)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._stop.is_set() or name not in self.procs or any(r is None for r in results):
            return  # the Job was deleted meanwhile; its pods are gone
        codes = []
        for pod, result in zip(pods, results, strict=True):
            assert result is not None
            code, status = result
            codes.append(code)
            self.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": status})
        failed = sum(1 for code in codes if code != 0)
        condition = ({"type": "Complete", "status": "True"} if not failed else
                     {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit"})
        with self._lock:
            self.conditions[name] = condition
        self.batch.patch_namespaced_job_status(name, NAMESPACE, {"status": {
            "succeeded": nodes - failed, "failed": failed, "conditions": [condition]}})

    def _collect(self, job: str) -> None:
        with self._lock:
            procs = self.procs.pop(job, [])
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for pod in self.core.list_namespaced_pod(NAMESPACE).items:
            if (pod.metadata.labels or {}).get("job-name") == job:
                self.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)


def _status(container: str, code: int) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
    return {"name": container, "image": "skyflow", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": terminated}}
