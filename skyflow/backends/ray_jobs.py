"""The Ray backend: each stage attempt is a Ray job on a running cluster, through the Job Submission API.

The submission itself comes from :mod:`skyflow.backends.ray_submission`; this module talks to the
cluster's dashboard through ``ray.job_submission.JobSubmissionClient`` (the ``ray`` extra), imported
on first use, follows the job's logs into the stage log with secrets masked, stops the job on cancel
or timeout, and reads the outputs the wrapper committed to the store. The submission id is the
attempt's remote handle: a runner started later (resume) stops the job from it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.backends.base import Capacity, Leftover, StageExit, StageHandle, StageLaunch
from skyflow.backends.masking import LogPump
from skyflow.backends.ray_submission import (
    ATTEMPT_TOKEN_KEY,
    JobSubmission,
    cluster_name,
    job_submission,
    new_submission_id,
)
from skyflow.backends.remote_stage import (
    code_package_for,
    commit_workdir,
    node_spec,
    read_result,
    remote_store_uri,
    render_yaml,
    split_env,
    store_for_render,
)
from skyflow.config import RayCluster, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.matching import close_matches
from skyflow.processes import attempt_token

if TYPE_CHECKING:
    from skyflow.backends.registry import BackendContext

POLL_S = 0.5
# How long a stopped job may take to reach STOPPED (Ray sends SIGTERM, then SIGKILL after its own grace).
STOP_WAIT_S = 60.0
_TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")


def _client_class() -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise BackendError("the Ray backend needs Ray's Job Submission SDK: pip install 'ray[default]>=2.44,<3' (the "
                           "ray extra of skyflow-llmops)", backend="ray") from exc
    return JobSubmissionClient


def open_client(address: str) -> Any:
    """A Job Submission client for the dashboard at ``address``; an unreachable one is a BackendError."""
    cls = _client_class()
    try:
        return cls(address)
    except Exception as exc:
        raise BackendError(f"cannot reach the Ray cluster's dashboard at {address}: {exc}. Is the cluster "
                           "up, and is this its dashboard address (http://HEAD:8265)?", backend="ray") from exc


@contextlib.contextmanager
def _translated(action: str, address: str, stage: str | None = None) -> Iterator[None]:
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"Ray cluster at {address}: {action} failed: {exc}", stage=stage, backend="ray") from exc


def remote_handle(cluster: str, address: str, submission_id: str) -> dict[str, Any]:
    return {"backend": "ray", "cluster": cluster, "address": address, "submission_id": submission_id}


def status_of(client: Any, submission_id: str) -> str:
    status = client.get_job_status(submission_id)
    return str(getattr(status, "value", status))


def stop_and_wait(client: Any, submission_id: str, timeout_s: float = STOP_WAIT_S) -> str:
    """Stop the job (a finished or unknown one is fine) and wait until Ray says it ended; its last status."""
    with contextlib.suppress(Exception):
        client.stop_job(submission_id)
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        try:
            status = status_of(client, submission_id)
        except Exception:  # no such job: nothing left to stop
            return "STOPPED"
        if status in _TERMINAL:
            return status
        time.sleep(POLL_S)
    return status


class LogFollower:
    """Copies a job's log into the stage log (masked) as Ray serves it, through a LogPump on a pipe.

    Ray streams the log over a websocket (``tail_job_logs``); whatever that stream missed (it broke,
    or the job ended before it connected) is taken from the full log once the job has ended.
    """

    def __init__(self, client: Any, submission_id: str, launch: StageLaunch, log: Any,
                 on_line: Callable[[str], None] | None) -> None:
        self.client, self.submission_id = client, submission_id
        read_fd, self._write_fd = os.pipe()
        self._sent = 0
        self._lock = threading.Lock()
        self._pump = LogPump(os.fdopen(read_fd, "rb"), log, launch.secret_values, "", on_line)
        self._tail = threading.Thread(target=self._follow, daemon=True, name=f"ray-log-{submission_id}")

    def start(self) -> None:
        self._pump.start()
        self._tail.start()

    def _send(self, text: str) -> None:
        with self._lock:
            self._send_locked(text)

    def _send_locked(self, text: str) -> None:
        if self._write_fd >= 0 and text:
            os.write(self._write_fd, text.encode("utf-8", "replace"))
            self._sent += len(text)

    def _follow(self) -> None:
        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(self.submission_id):
                self._send(chunk)

        with contextlib.suppress(Exception):  # the full log is read once the job ends
            asyncio.run(tail())

    def finish(self, timeout_s: float = 10.0) -> None:
        """After the job ended: the rest of its log, then close the pipe so the pump ends."""
        self._tail.join(timeout=timeout_s)
        full = ""
        with contextlib.suppress(Exception):
            full = str(self.client.get_job_logs(self.submission_id))
        with self._lock:  # the stream (if it still runs) writes nothing after this
            self._send_locked(full[self._sent:])
            os.close(self._write_fd)
            self._write_fd = -1
        self._pump.join(timeout=timeout_s)


@dataclass
class RayStageHandle:
    """One submitted job: followed until it ends, its log copied, its outputs read from the store."""

    client: Any
    launch: StageLaunch
    cluster: str
    address: str
    submission_id: str
    store_uri: str
    result_key: str
    on_line: Callable[[str, str], None] | None = None
    poll_s: float = POLL_S
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _log: Any = None
    _follower: LogFollower | None = None

    def follow_logs(self) -> None:
        """Start copying the job's log into the stage log (from launch on, as a local process's would be)."""
        self.launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.launch.log_path, "ab")  # noqa: SIM115 - closed when wait() ends
        listener = (lambda line, s=self.launch.stage, cb=self.on_line: cb(s, line)) if self.on_line else None
        self._follower = LogFollower(self.client, self.submission_id, self.launch, self._log, listener)
        self._follower.start()

    @property
    def process_groups(self) -> list[int]:
        return []  # nothing runs on this machine

    @property
    def remote(self) -> dict[str, Any]:
        return remote_handle(self.cluster, self.address, self.submission_id)

    def status(self) -> str:
        with _translated("reading the job's status", self.address, self.launch.stage):
            return status_of(self.client, self.submission_id)

    def wait(self) -> StageExit:
        if self._follower is None:
            self.follow_logs()
        try:
            return self._wait()
        finally:
            assert self._follower is not None
            self._follower.finish()
            self._log.close()

    def _wait(self) -> StageExit:
        deadline = time.monotonic() + self.launch.timeout_s if self.launch.timeout_s else None
        while True:
            if self._cancelled.is_set():
                stop_and_wait(self.client, self.submission_id)
                return StageExit(-15, "cancelled", cancelled=True)
            status = self.status()
            if status in _TERMINAL:
                return self._result(status)
            if deadline is not None and time.monotonic() > deadline:
                stop_and_wait(self.client, self.submission_id)
                return StageExit(-9, f"timed out after {self.launch.timeout_s:g} s", timed_out=True)
            self._cancelled.wait(self.poll_s)

    def _result(self, status: str) -> StageExit:
        if status == "STOPPED":  # stopped from outside (`ray job stop`, the dashboard)
            return StageExit(-15, f"Ray job {self.submission_id} was stopped outside skyflow")
        if status == "FAILED":
            with _translated("reading the job's details", self.address, self.launch.stage):
                info = self.client.get_job_info(self.submission_id)
            code = getattr(info, "driver_exit_code", None)
            message = getattr(info, "message", "") or ""
            return StageExit(int(code) if code else 1, f"Ray job {self.submission_id} failed: {message}".strip())
        with _translated("reading the stage result", self.address, self.launch.stage):
            outputs = read_result(self.store_uri, self.result_key, stage=self.launch.stage, backend="ray")
        if outputs is None:
            return StageExit(1, f"the Ray job succeeded but wrote no result to {self.store_uri}/{self.result_key}")
        return StageExit(0, outputs=outputs)

    def cancel(self) -> None:
        self._cancelled.set()
        with contextlib.suppress(Exception):
            self.client.stop_job(self.submission_id)


class RayBackend:
    """Runs each stage as a Ray job on the cluster its placement names (`ray/NAME`)."""

    name = "ray"

    def __init__(self, config: SkyflowConfig | None = None, on_line: Callable[[str, str], None] | None = None,
                 client_factory: Callable[[str], Any] | None = None, poll_s: float = POLL_S) -> None:
        self.config = config or SkyflowConfig()
        self.on_line = on_line
        self.poll_s = poll_s
        self._open_client = client_factory or open_client
        self._clients: dict[str, Any] = {}

    def capacity(self) -> Capacity:
        clusters = self.config.ray_clusters.values()
        gpus: dict[str, int] = {}
        for cluster in clusters:
            for gpu, count in cluster.accelerators.items():
                gpus[gpu] = gpus.get(gpu, 0) + count * cluster.nodes
        return Capacity(cpus=sum((c.cpus or 0) * c.nodes for c in clusters),
                        memory_gb=sum((c.memory_gb or 0) * c.nodes for c in clusters), gpus=gpus, max_parallel=64)

    def cluster(self, infra: str, stage: str | None = None) -> tuple[str, RayCluster]:
        """The configured cluster `ray/NAME` names (plain `ray`: the only one configured)."""
        clusters = self.config.ray_clusters
        name = cluster_name(infra)
        if not name and len(clusters) == 1:
            name = next(iter(clusters))
        if name in clusters:
            return name, clusters[name]
        known = ", ".join(sorted(clusters)) or "none"
        close = close_matches(name, list(clusters)) if name else []
        hint = f" Did you mean {', '.join(f'ray/{c}' for c in close)}?" if close else ""
        raise BackendError(f"no Ray cluster {name or '(unnamed)'!r} in the skyflow config (configured: {known}); "
                           f"add it under ray_clusters: {{{name or 'NAME'}: {{address: http://HEAD:8265}}}} in "
                           f"$SKYFLOW_HOME/config.yaml.{hint}", stage=stage, backend="ray")

    def _client(self, address: str) -> Any:
        if address not in self._clients:
            self._clients[address] = self._open_client(address)
        return self._clients[address]

    def submission(self, launch: StageLaunch, store_uri: str, submission_id: str, workdir_ref: Any = None,
                   cluster: RayCluster | None = None) -> JobSubmission:
        """What one attempt submits (secret values included: print only ``redacted()``)."""
        cluster = cluster or self.cluster(launch.placement.infra, launch.stage)[1]
        package = None if cluster.nodes_have_skyflow else code_package_for(store_uri)
        plain, secret = split_env(launch)
        return job_submission(launch, cluster, node_spec(launch, store_uri, workdir_ref), plain, secret,
                              package, submission_id)

    def render(self, launch: StageLaunch) -> str:
        """The job submission a launch would make, secrets redacted (for --dry-run). Nothing is submitted;
        the code package is built here so the working_dir shown is the one a launch would upload."""
        store, note = store_for_render(launch, self.name)
        try:
            name, cluster = self.cluster(launch.placement.infra, launch.stage)
        except BackendError as exc:  # a cluster forced with --infra may be reviewed before it is configured
            name, cluster = cluster_name(launch.placement.infra), RayCluster(address="http://HEAD:8265")
            note += "".join(f"# {line}\n" for line in str(exc).splitlines())
        submission = self.submission(launch, store, "<assigned at launch>", cluster=cluster)
        shown = submission.redacted()
        if "working_dir" in shown["runtime_env"]:
            package = code_package_for(store)
            shown["runtime_env"]["working_dir"] = (f"<skyflow's code package {package.digest[:12]}: "
                                                   f"{len(package.files)} wheels, {package.size_bytes / 1e6:.1f} MB, "
                                                   "uploaded by Ray at launch>")
        head = f"# Ray job on cluster {name!r} ({cluster.address}), through its Job Submission API\n"
        return head + note + render_yaml([shown])

    def launch(self, launch: StageLaunch) -> StageHandle:
        store = remote_store_uri(launch, self.name)  # first: nothing is uploaded or submitted without it
        name, cluster = self.cluster(launch.placement.infra, launch.stage)
        launch = replace(launch, input_refs=_committed_inputs(launch, store))
        client = self._client(cluster.address)
        submission_id = new_submission_id(launch.run_id, launch.stage, launch.attempt)
        submission = self.submission(launch, store, submission_id, commit_workdir(launch, store))
        with _translated(f"submitting stage {launch.stage!r}", cluster.address, launch.stage):
            client.submit_job(**submission.kwargs())
        handle = RayStageHandle(client, launch, name, cluster.address, submission_id, store,
                                node_spec(launch, store)["result_key"], self.on_line, self.poll_s)
        handle.follow_logs()
        return handle

    def abandon(self, leftover: Leftover) -> None:
        """Stop the job a dead runner's attempt left (`skyflow resume`, `skyflow cancel`), found by its stored
        submission id, or, for a runner that died between submitting it and recording the id, by the token
        of the attempt's log path in the jobs' metadata."""
        remote = leftover.remote
        if remote and remote.get("backend") == "ray":
            address, submission_id = str(remote["address"]), str(remote["submission_id"])
            stop_and_wait(self._client(address), submission_id)
        elif not remote and leftover.log_path and leftover.infra:
            address = self.cluster(leftover.infra)[1].address
            client, token = self._client(address), attempt_token(leftover.log_path)
            with _translated("listing its jobs", address):
                left = [job.submission_id for job in client.list_jobs()
                        if (job.metadata or {}).get(ATTEMPT_TOKEN_KEY) == token
                        and str(getattr(job.status, "value", job.status)) not in _TERMINAL]
            for submission_id in left:
                stop_and_wait(client, submission_id)


def _committed_inputs(launch: StageLaunch, store_uri: str) -> dict[str, ArtifactRecord]:
    """The launch's inputs as records in the stage's store: the runner's refs, and any input that is only
    a folder on this machine committed there, so the node can fetch it."""
    from skyflow.artifacts import commit_output, open_store

    refs = dict(launch.input_refs)
    local = {name: path for name, path in launch.inputs.items() if name not in refs and path.is_dir()}
    if local:
        store = open_store(store_uri)
        refs.update({name: commit_output(store, path, name=name).record for name, path in local.items()})
    return refs


def from_context(context: BackendContext) -> RayBackend:
    # extra["ray_client_factory"]: open Job Submission clients another way (headers, a test double).
    return RayBackend(context.config, on_line=context.on_line, client_factory=context.extra.get("ray_client_factory"))
