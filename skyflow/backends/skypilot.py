"""The SkyPilot backend: a stage placed on a cloud runs as a SkyPilot task pinned to the planner's choice.

`sky.jobs.launch` (managed, with spot recovery) for spot placements, `sky.launch` then `sky.down`
otherwise; service stages go through `sky serve up`. `sky` (the ``skypilot`` extra) is imported on
first use. Each node installs skyflow's code package (built here, once per process) in the task's
setup. Outputs are committed by the stage wrapper on node 0 and read back from the store.
"""

from __future__ import annotations

import importlib
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.backends.base import Capacity, Leftover, RemoteHandle, StageExit, StageHandle, StageLaunch
from skyflow.backends.masking import mask_secrets
from skyflow.backends.remote_stage import (
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
from skyflow.backends.skypilot_task import (
    NodeSetup,
    code_package_setup,
    own_install_setup,
    task_config,
    task_name,
    wants_recovery,
)
from skyflow.config import SkyPilotConfig
from skyflow.errors import BackendError

if TYPE_CHECKING:
    from skyflow.backends.registry import BackendContext


# SkyPilot's errors for a cluster, or the jobs or serve controller, that is not there: what was to be
# stopped was never made or is gone already.
_ABSENT = frozenset({"ClusterDoesNotExist", "ClusterNotUpError"})


def import_sky() -> Any:
    try:
        return importlib.import_module("sky")
    except ImportError as exc:
        raise BackendError("stages placed on a cloud run through SkyPilot: "
                           "pip install 'skypilot>=0.10' (the skypilot extra of skyflow-llmops)",
                           backend="skypilot") from exc


class _LogSink(io.TextIOBase):
    """A text stream SkyPilot writes logs to: masked, appended to the stage log, passed on by line."""

    def __init__(self, log: io.BufferedWriter, secrets: tuple[str, ...],
                 on_line: Callable[[str], None] | None) -> None:
        self.log, self.secrets, self.on_line = log, [s for s in secrets if s], on_line
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            masked = mask_secrets(line, self.secrets)
            self.log.write((masked + "\n").encode())
            if self.on_line:
                self.on_line(masked)
        self.log.flush()
        return len(text)


@dataclass
class SkyPilotStageHandle:
    """A launched task: logs are tailed until it ends; a plain cluster is taken down afterwards."""

    sky: Any
    launch: StageLaunch
    cluster: str
    job_id: int | None
    managed: bool
    store_uri: str
    result_key: str
    on_line: Callable[[str, str], None] | None = None
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def process_groups(self) -> list[int]:
        return []

    @property
    def remote(self) -> dict[str, Any]:
        """What `skyflow resume` needs to stop this task if the runner dies first."""
        return {"backend": "skypilot", "cluster": self.cluster, "job_id": self.job_id, "managed": self.managed}

    def wait(self) -> StageExit:
        self.launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        listener = (lambda line: self.on_line(self.launch.stage, line)) if self.on_line else None  # type: ignore[misc]
        try:
            with open(self.launch.log_path, "ab") as log:
                sink = _LogSink(log, self.launch.secret_values, listener)
                code = self._tail(sink)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"SkyPilot: following {self.cluster} failed: {exc}", stage=self.launch.stage,
                               backend="skypilot") from exc
        finally:
            if not self.managed:
                self._down()
        if self._cancelled.is_set():
            return StageExit(-15, "cancelled", cancelled=True)
        if code != 0:
            return StageExit(int(code), f"exit code {code}")
        outputs = read_result(self.store_uri, self.result_key, stage=self.launch.stage, backend="skypilot")
        if outputs is None:
            return StageExit(1, f"the task succeeded but wrote no result to {self.store_uri}/{self.result_key}")
        return StageExit(0, outputs=outputs)

    def _tail(self, sink: io.TextIOBase) -> int:
        if self.managed:
            return int(self.sky.jobs.tail_logs(job_id=self.job_id, follow=True, output_stream=sink) or 0)
        return int(self.sky.tail_logs(self.cluster, self.job_id, follow=True, output_stream=sink) or 0)

    def _down(self) -> None:
        self.sky.stream_and_get(self.sky.down(self.cluster))

    def cancel(self) -> None:
        self._cancelled.set()
        if self.managed:
            self.sky.stream_and_get(self.sky.jobs.cancel(job_ids=[self.job_id]))
        else:
            self.sky.stream_and_get(self.sky.cancel(self.cluster, job_ids=[self.job_id]))


FAILED_SERVICE_STATUSES = ("CONTROLLER_FAILED", "FAILED", "FAILED_CLEANUP", "NO_REPLICA")
POLL_S = 5.0


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status) or "")


@dataclass
class SkyServeService:
    """A `sky serve` service: ready once `sky serve status` says READY."""

    sky: Any
    name: str
    endpoint: str
    poll_s: float = POLL_S

    @property
    def remote(self) -> dict[str, Any]:
        return {"backend": "skypilot", "service": self.name}

    @property
    def process_groups(self) -> list[int]:
        return []  # nothing runs on this machine

    def status(self) -> dict[str, Any] | None:
        records = self.sky.stream_and_get(self.sky.serve.status([self.name])) or []
        return next((dict(r) for r in records if r.get("name") == self.name), None)

    def wait_ready(self, cancel: threading.Event, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        last = "unknown"
        while not cancel.is_set():
            record = self.status()
            last = _status_name(record.get("status")) if record else "not found"
            if last == "READY":
                self.endpoint = str(record.get("endpoint") or self.endpoint) if record else self.endpoint
                return None
            if last in FAILED_SERVICE_STATUSES:
                return f"is {last} (see `sky serve logs {self.name}`)"
            if time.monotonic() > deadline:
                return f"not READY after {timeout_s:g} s (sky serve status: {last})"
            cancel.wait(self.poll_s)
        return "cancelled"

    def stop(self) -> None:
        self.sky.stream_and_get(self.sky.serve.down(self.name))


class SkyPilotBackend:
    """Launches stages with SkyPilot; skyflow has already chosen where."""

    name = "skypilot"

    def __init__(self, on_line: Callable[[str, str], None] | None = None, config: SkyPilotConfig | None = None,
                 sky_module: Any = None, poll_s: float = POLL_S) -> None:
        self.on_line = on_line
        self.settings = config or SkyPilotConfig()
        self._sky = sky_module
        self.poll_s = poll_s

    @property
    def sky(self) -> Any:
        if self._sky is None:
            self._sky = import_sky()
        return self._sky

    def capacity(self) -> Capacity:
        return Capacity(cpus=0.0, memory_gb=0.0, gpus={}, max_parallel=64)  # clouds: bounded by quota only

    def node_setup(self, launch: StageLaunch, store_uri: str, *, ship: bool = False) -> NodeSetup:
        """How the task's nodes get skyflow. With ``ship`` (a launch) and `code_fetch: url`, the code
        package is uploaded to the store and its URLs signed; otherwise nothing leaves this machine."""
        settings = self.settings
        if settings.install is not None:
            return own_install_setup(settings.install, settings.python)
        package = code_package_for(store_uri)
        if settings.code_fetch == "dir":
            return code_package_setup(package, settings.python)
        urls = (ship_code_package(launch, store_uri, self.name, "leave `code_fetch` at dir (a file mount), or "
                                  "give the nodes skyflow's code package another way: "
                                  "`skypilot: {install: ...}` in config.yaml")
                if ship else placeholder_urls(package, store_uri))
        return code_package_setup(package, settings.python, urls)

    def task_config(self, launch: StageLaunch, store_uri: str, workdir_ref: ArtifactRecord | None = None,
                    node: NodeSetup | None = None) -> dict[str, Any]:
        """The SkyPilot task for one attempt; ``node`` defaults to what a dry run shows (nothing shipped)."""
        plain, secret = split_env(launch)
        return task_config(launch, node_spec(launch, store_uri, workdir_ref), plain, tuple(secret),
                           node or self.node_setup(launch, store_uri))

    def render(self, launch: StageLaunch) -> str:
        """The task as YAML (for --dry-run). Nothing is uploaded or signed; the code package is built
        here (about 2 s, once per process) so setup, run and file_mounts show what a launch uses."""
        store, note = store_for_render(launch, self.name)
        mode = "sky jobs launch (spot recovery)" if wants_recovery(launch) else "sky launch, then sky down"
        return f"{note}# {mode}\n" + render_yaml([self.task_config(launch, store)])

    def _task(self, launch: StageLaunch) -> tuple[Any, dict[str, Any], str]:
        store = remote_store_uri(launch, self.name)  # first: nothing is built, uploaded or launched without it
        node = self.node_setup(launch, store, ship=True)
        config = self.task_config(launch, store, commit_workdir(launch, store), node)
        try:
            task = self.sky.Task.from_yaml_config(config)
        except Exception as exc:
            raise BackendError(f"SkyPilot rejected the task for stage {launch.stage!r}: {exc}",
                               stage=launch.stage, backend=self.name) from exc
        _, secret = split_env(launch)
        if secret:
            task.update_secrets(secret)
        return task, config, store

    def launch(self, launch: StageLaunch) -> StageHandle:
        task, config, store = self._task(launch)
        name, managed = config["name"], wants_recovery(launch)
        try:
            if managed:
                job_ids, _ = self.sky.stream_and_get(self.sky.jobs.launch(task, name=name))
                job_id = job_ids[0] if isinstance(job_ids, list) else job_ids
            else:
                job_id, _ = self.sky.stream_and_get(self.sky.launch(task, cluster_name=name, down=True))
        except Exception as exc:
            raise BackendError(f"SkyPilot could not launch stage {launch.stage!r} on "
                               f"{config['resources'].get('infra', 'a cloud')}: {exc}",
                               stage=launch.stage, backend=self.name) from exc
        key = node_spec(launch, store)["result_key"]
        return SkyPilotStageHandle(self.sky, launch, name, job_id, managed, store, key, self.on_line)

    def serve(self, launch: StageLaunch) -> SkyServeService:
        task, config, _ = self._task(launch)
        try:
            name, endpoint = self.sky.stream_and_get(self.sky.serve.up(task, service_name=config["name"]))
        except Exception as exc:
            raise BackendError(f"sky serve up failed for stage {launch.stage!r}: {exc}", stage=launch.stage,
                               backend=self.name) from exc
        return SkyServeService(self.sky, str(name), str(endpoint or ""), self.poll_s)

    def stop_service(self, leftover: Leftover) -> None:
        """`sky serve down` for a service stage, from its stored handle (`skyflow down`)."""
        if leftover.remote:
            self._stop_service(leftover.remote)

    def _stop_service(self, handle: RemoteHandle) -> None:
        self._call(f"sky serve down {handle['service']}", self.sky.serve.down, handle["service"])

    def planned_remote(self, launch: StageLaunch) -> RemoteHandle:
        """The handle before the launch returns (provisioning takes minutes): the names are the attempt's,
        the managed job's id is not known yet."""
        name = task_name(launch.run_id, launch.stage, launch.attempt)
        if launch.spec.service is not None:
            return {"backend": "skypilot", "service": name}
        return {"backend": "skypilot", "cluster": name, "job_id": None, "managed": wants_recovery(launch)}

    def abandon(self, leftover: Leftover) -> None:
        """Stop what a dead runner's attempt left: cancel the managed job (by its id, or by its name when the
        runner died before the launch returned it), take the cluster down, or take down a service that never
        became ready. One that is not there (never made, or gone) is nothing to stop."""
        handle = leftover.remote
        if not handle:
            return
        if handle.get("service"):
            self._stop_service(handle)
        elif handle.get("managed") and handle.get("job_id") is None:
            self._call(f"sky jobs cancel --name {handle['cluster']}", self.sky.jobs.cancel, name=handle["cluster"])
        elif handle.get("managed"):
            self._call(f"sky jobs cancel {handle['job_id']}", self.sky.jobs.cancel, job_ids=[handle["job_id"]])
        else:
            self._call(f"sky down {handle['cluster']}", self.sky.down, handle["cluster"])

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            self.sky.stream_and_get(fn(*args, **kwargs))
        except Exception as exc:
            if type(exc).__name__ in _ABSENT:
                return
            raise BackendError(f"SkyPilot: {what} failed: {exc}", backend=self.name) from exc


def from_context(context: BackendContext) -> SkyPilotBackend:
    return SkyPilotBackend(on_line=context.on_line, config=context.config.skypilot)
