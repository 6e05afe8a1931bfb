"""The Backend protocol: launch a stage's processes, wait for them, stream logs, cancel, tear down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class StageLaunch:
    """Everything a backend needs to start one attempt of one stage."""

    run_id: str
    stage: str
    attempt: int
    setup: str | None
    run: str
    workdir: Path
    env: Mapping[str, str]
    num_nodes: int
    log_path: Path
    timeout_s: float | None = None
    gpu_count: float = 0.0
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    # Where the runner put the inputs and expects the outputs on this machine. A remote backend
    # copies inputs out and outputs back, or commits outputs itself (StageExit.outputs).
    inputs: Mapping[str, Path] = field(default_factory=dict)
    outputs: Mapping[str, Path] = field(default_factory=dict)
    # The committed input artifacts ({"uri", "digest", "size_bytes", "store_uri"}) for backends
    # whose nodes fetch inputs from a store themselves, and the store outputs should go to.
    input_refs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    store_uri: str | None = None
    # The planner's placement of this stage (infra, cloud, region, instance_type, use_spot, ...).
    placement: Mapping[str, Any] = field(default_factory=dict)
    stage_spec: Any = None  # the validated skyflow.spec.models.Stage


@dataclass(frozen=True)
class StageExit:
    """How an attempt ended: exit code (negative for a signal), and why, in words."""

    exit_code: int
    reason: str = ""
    timed_out: bool = False
    cancelled: bool = False
    # Set by backends whose nodes committed the outputs themselves: name -> {uri, digest, size_bytes}.
    outputs: Mapping[str, Mapping[str, Any]] | None = None

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


class StageHandle(Protocol):
    """A launched attempt: its process ids (for resume and cancel) and a way to wait."""

    @property
    def process_groups(self) -> list[int]: ...

    def wait(self) -> StageExit: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    """Runs stage attempts somewhere: this machine, an SSH pool, Kubernetes, a cloud."""

    name: str

    def capacity(self) -> Capacity: ...

    def launch(self, launch: StageLaunch) -> StageHandle: ...

    def kill_process_groups(self, groups: list[int]) -> None: ...
