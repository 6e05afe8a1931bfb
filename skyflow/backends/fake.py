"""A fake Backend for tests: no processes, each attempt's result decided by a function of its launch.

Shipped beside the Backend protocol (as httpx ships MockTransport) so that tests of the runner, the
session or a user's own tooling can run whole pipelines without starting anything::

    def handler(launch: StageLaunch) -> FakeResult:
        (launch.outputs["model"] / "weights.txt").write_text("trained")
        return FakeResult(lines=["loss=0.1"])

    backend = FakeBackend(handler)

`launch_for` builds a StageLaunch from a command and plain values, for tests of real backends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.backends.base import Capacity, Leftover, RemoteHandle, StageExit, StageLaunch
from skyflow.backends.masking import mask_secrets
from skyflow.planner.plan import Placement
from skyflow.spec.models import Stage

__all__ = ["FakeBackend", "FakeHandle", "FakeResult", "FakeService", "launch_for"]


@dataclass(frozen=True)
class FakeResult:
    """What a fake attempt does: its log lines (masked like a real backend's), exit code, and outputs
    committed by "its nodes" (None: the runner commits the local output directories)."""

    exit_code: int = 0
    lines: Sequence[str] = ()
    reason: str = ""
    outputs: Mapping[str, ArtifactRecord] | None = None
    block: bool = False  # wait until cancelled (for cancel and timeout tests)


@dataclass
class FakeHandle:
    launch: StageLaunch
    result: FakeResult
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def process_groups(self) -> list[int]:
        return []

    @property
    def remote(self) -> RemoteHandle:
        return {"fake": f"{self.launch.run_id}/{self.launch.stage}/{self.launch.attempt}"}

    def wait(self) -> StageExit:
        if self.result.block and not self._cancelled.wait(self.launch.timeout_s):
            return StageExit(-9, f"timed out after {self.launch.timeout_s:g} s", timed_out=True)
        if self._cancelled.is_set():
            return StageExit(-15, "cancelled", cancelled=True)
        reason = self.result.reason or ("" if self.result.exit_code == 0 else f"exit code {self.result.exit_code}")
        return StageExit(self.result.exit_code, reason, outputs=self.result.outputs)

    def cancel(self) -> None:
        self._cancelled.set()


@dataclass
class FakeService:
    endpoint: str
    remote: RemoteHandle | None
    ready: str | None = None  # None: ready; else why not
    stopped: bool = False

    @property
    def process_groups(self) -> list[int]:
        return []

    def wait_ready(self, cancel: threading.Event, timeout_s: float) -> str | None:
        return self.ready

    def stop(self) -> None:
        self.stopped = True


class FakeBackend:
    """Backend, ServiceBackend and RenderingBackend at once; records what it was asked to do."""

    def __init__(self, handler: Callable[[StageLaunch], FakeResult] = lambda launch: FakeResult(),
                 name: str = "fake", capacity: Capacity | None = None,
                 on_line: Callable[[str, str], None] | None = None) -> None:
        self.handler = handler
        self.name = name
        self._capacity = capacity or Capacity(cpus=8, memory_gb=32, gpus={}, max_parallel=8)
        self.on_line = on_line
        self.launches: list[StageLaunch] = []
        self.abandoned: list[Leftover] = []
        self.stopped_services: list[Leftover] = []
        self._lock = threading.Lock()

    def capacity(self) -> Capacity:
        return self._capacity

    def launch(self, launch: StageLaunch) -> FakeHandle:
        with self._lock:
            self.launches.append(launch)
        result = self.handler(launch)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "a", encoding="utf-8") as log:
            for line in result.lines:
                masked = mask_secrets(line, launch.secret_values)
                log.write(masked + "\n")
                if self.on_line is not None:
                    self.on_line(launch.stage, masked)
        return FakeHandle(launch, result)

    def abandon(self, leftover: Leftover) -> None:
        with self._lock:
            self.abandoned.append(leftover)

    def serve(self, launch: StageLaunch) -> FakeService:
        with self._lock:
            self.launches.append(launch)
        return FakeService(f"http://fake/{launch.stage}", {"fake-service": launch.stage})

    def stop_service(self, leftover: Leftover) -> None:
        with self._lock:
            self.stopped_services.append(leftover)

    def render(self, launch: StageLaunch) -> str:
        return f"# fake launch of {launch.stage} on {launch.placement.infra}\n{launch.run}\n"


def launch_for(root: Path, run: str, *, stage: str = "train", setup: str | None = None,
               timeout_s: float | None = None, num_nodes: int = 1, env: Mapping[str, str] | None = None,
               placement: Placement | None = None, spec: Mapping[str, Any] | None = None,
               secrets: tuple[str, ...] = (), inputs: Mapping[str, Path] | None = None,
               outputs: Mapping[str, Path] | None = None, input_refs: Mapping[str, ArtifactRecord] | None = None,
               run_id: str = "r1", attempt: int = 1, workdir: Path | None = None) -> StageLaunch:
    """A StageLaunch for one command, with its log under ``root`` (for tests of backends)."""
    stage_spec = Stage.model_validate({"run": run, "setup": setup, "num_nodes": num_nodes, "timeout": timeout_s,
                                       **(spec or {})})
    where = placement or Placement(infra="local", cloud="local", region=None, zone=None, instance_type="local",
                                   accelerators={}, use_spot=False, num_nodes=num_nodes, hourly_usd=0.0, hours=0.0)
    return StageLaunch(run_id=run_id, stage=stage, attempt=attempt, spec=stage_spec, placement=where,
                       workdir=workdir or root, env=dict(env or {}), log_path=root / "attempt" / "stage.log",
                       secret_values=secrets, inputs=dict(inputs or {}), outputs=dict(outputs or {}),
                       input_refs=dict(input_refs or {}))
