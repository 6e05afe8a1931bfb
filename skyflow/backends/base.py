"""The Backend protocol: launch a stage's processes, wait for them, stream logs, cancel, tear down.

A backend is anything with `name`, `capacity`, `launch` and `abandon`. Two optional abilities are
sub-protocols a runner checks with ``isinstance``, never by probing attributes: `ServiceBackend`
(long-running service stages) and `RenderingBackend` (what `--dry-run` shows).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from skyflow.artifacts.record import ArtifactRecord

if TYPE_CHECKING:  # not at run time: a remote node's wrapper imports this module and needs neither
    from skyflow.planner.plan import Placement
    from skyflow.spec.models import Stage

__all__ = ["Backend", "Capacity", "JsonValue", "Leftover", "RemoteHandle", "RenderingBackend", "Service",
           "ServiceBackend", "StageExit", "StageHandle", "StageLaunch"]

# JSON a backend writes so that a later process finds what an attempt created (Job names, a task id).
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
RemoteHandle = Mapping[str, JsonValue]


@dataclass(frozen=True)
class StageLaunch:
    """Everything a backend needs to start one attempt of one stage.

    ``spec`` is the stage with the planned alternative's resources applied (accelerators, disk,
    job_recovery of the `any_of` branch the plan chose); ``placement`` where the plan put it,
    including its artifact store and, for clusters, where the cluster lives.
    """

    run_id: str
    stage: str
    attempt: int
    spec: Stage
    placement: Placement
    workdir: Path
    env: Mapping[str, str]
    log_path: Path
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    # Where the runner put the inputs and expects the outputs on this machine. A remote backend
    # copies inputs out and outputs back, or commits outputs itself (StageExit.outputs).
    inputs: Mapping[str, Path] = field(default_factory=dict)
    outputs: Mapping[str, Path] = field(default_factory=dict)
    # The committed inputs, for nodes that fetch them from a store themselves.
    input_refs: Mapping[str, ArtifactRecord] = field(default_factory=dict)

    @property
    def setup(self) -> str | None:
        return self.spec.setup

    @property
    def run(self) -> str:
        return self.spec.run or "true"

    @property
    def num_nodes(self) -> int:
        return self.spec.num_nodes

    @property
    def timeout_s(self) -> float | None:
        return self.spec.timeout

    @property
    def gpu_count(self) -> float:
        """Accelerators per node of the planned alternative."""
        return float(sum(a.count for a in self.spec.resources.accelerators[:1]))

    @property
    def store_uri(self) -> str | None:
        """The artifact store the plan gave this stage (None: this machine's local store)."""
        return self.placement.store_uri


@dataclass(frozen=True)
class StageExit:
    """How an attempt ended: exit code (negative for a signal), and why, in words."""

    exit_code: int
    reason: str = ""
    timed_out: bool = False
    cancelled: bool = False
    # Set by backends whose nodes committed the outputs themselves.
    outputs: Mapping[str, ArtifactRecord] | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled

    @property
    def preempted(self) -> bool:
        """Killed from outside by a signal (what a spot preemption looks like locally)."""
        return self.exit_code < 0 and not self.timed_out and not self.cancelled


@dataclass(frozen=True)
class Capacity:
    """What a backend can run at once."""

    cpus: float
    memory_gb: float
    gpus: Mapping[str, int]
    max_parallel: int


@dataclass(frozen=True)
class Leftover:
    """What an attempt or service left running, as run state recorded it: local process groups
    and the backend's remote handle, and the attempt's log path (recorded before anything started,
    so it is there even when the rest is not). A new runner (resume, `skyflow down`) stops it from
    this alone."""

    process_groups: tuple[int, ...] = ()
    remote: RemoteHandle | None = None
    log_path: str | None = None
    # Where the plan placed the attempt (`kubernetes/CTX`, `ray/NAME`): where to look, with the log path's
    # token, for what an attempt left whose runner died before recording its remote handle.
    infra: str | None = None


class StageHandle(Protocol):
    """A launched attempt: what to record to find it again, a way to wait, a way to stop it."""

    @property
    def process_groups(self) -> list[int]: ...

    @property
    def remote(self) -> RemoteHandle | None: ...

    def wait(self) -> StageExit: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    """Runs stage attempts somewhere: this machine, an SSH pool, Kubernetes, a cloud."""

    name: str

    def capacity(self) -> Capacity: ...

    def launch(self, launch: StageLaunch) -> StageHandle: ...

    def abandon(self, leftover: Leftover) -> None:
        """Stop what a dead runner's attempt left (resume calls this before running the stage again)."""
        ...


class Service(Protocol):
    """A service stage's replicas, started; the run goes on while they serve."""

    @property
    def endpoint(self) -> str: ...

    @property
    def process_groups(self) -> list[int]: ...

    @property
    def remote(self) -> RemoteHandle | None: ...

    def wait_ready(self, cancel: threading.Event, timeout_s: float) -> str | None:
        """None once every replica answers its readiness probe; else why not (exited, timed out, cancelled)."""
        ...

    def stop(self) -> None: ...


@runtime_checkable
class ServiceBackend(Protocol):
    """A backend that can run service stages (`service:`) and stop them later (`skyflow down`)."""

    def serve(self, launch: StageLaunch) -> Service: ...

    def stop_service(self, leftover: Leftover) -> None: ...


@runtime_checkable
class WriteAheadBackend(Protocol):
    """A backend whose launch takes long enough to matter before it returns a handle (SkyPilot provisions a
    cluster for minutes): the runner records ``planned_remote`` before the launch, so a runner that dies
    during it leaves a handle `abandon` can stop what the launch made. The launch's own handle replaces it."""

    def planned_remote(self, launch: StageLaunch) -> RemoteHandle | None: ...


@runtime_checkable
class RenderingBackend(Protocol):
    """A backend that can show what it would create for a launch (a manifest, a task), for --dry-run."""

    def render(self, launch: StageLaunch) -> str: ...
