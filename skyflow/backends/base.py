"""The Backend protocol: launch a stage's processes, wait for them, stream logs, cancel, tear down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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


@dataclass(frozen=True)
class StageExit:
    """How an attempt ended: exit code (negative for a signal), and why, in words."""

    exit_code: int
    reason: str = ""
    timed_out: bool = False
    cancelled: bool = False

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
