"""The local backend: each stage a process group on this machine (one process per node)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skyflow.backends.base import Capacity, Leftover, RemoteHandle, StageExit, StageHandle, StageLaunch
from skyflow.backends.gpus import GpuAllocator, detect_gpus
from skyflow.backends.masking import LogPump
from skyflow.errors import BackendError
from skyflow.processes import KILL_GRACE_S, kill_process_groups, process_start

if TYPE_CHECKING:
    from skyflow.backends.local_service import LocalService
    from skyflow.backends.registry import BackendContext


def detect_capacity(max_parallel: int | None = None) -> Capacity:
    """This machine's cpus, memory and GPUs (read at the edge, passed to the planner)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = 0.0
    gpus: dict[str, int] = {}
    for name in detect_gpus().values():
        gpus[name] = gpus.get(name, 0) + 1
    return Capacity(cpus=cpus, memory_gb=round(memory_gb, 1), gpus=gpus,
                    max_parallel=max_parallel or max(4, int(cpus) * 4))


@dataclass
class LocalStageHandle:
    """The processes of one attempt: one per node, each leading its own process group."""

    procs: list[subprocess.Popen[bytes]]
    pumps: list[LogPump]
    timeout_s: float | None
    release: Callable[[], None]
    _cancelled: threading.Event = field(default_factory=threading.Event)
    # Each group leader's start, taken at launch: once a leader is reaped its pid is free, and a group
    # is signalled only while its id still names this attempt's group.
    starts: dict[int, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.starts = self.starts or {p.pid: process_start(p.pid) for p in self.procs}

    @property
    def process_groups(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def remote(self) -> RemoteHandle | None:
        return None  # the process groups are all a later runner needs

    def wait(self) -> StageExit:
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        try:
            return self._wait(deadline)
        finally:
            for pump in self.pumps:
                pump.join(timeout=5)
            self.release()

    def _wait(self, deadline: float | None) -> StageExit:
        while True:
            codes = [p.poll() for p in self.procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:  # one node failing fails the stage, as in SkyPilot; stop the others
                self._kill_all()
                return StageExit(failed[0], "cancelled" if self._cancelled.is_set() else
                                 _describe(failed[0]), cancelled=self._cancelled.is_set())
            if all(c == 0 for c in codes):
                kill_process_groups(self.process_groups, self.procs, self.starts)  # background children die too
                if self._cancelled.is_set():
                    return StageExit(-int(signal.SIGTERM), "cancelled", cancelled=True)
                return StageExit(0)
            if deadline is not None and time.monotonic() > deadline:
                self._kill_all()
                return StageExit(-int(signal.SIGKILL), f"timed out after {self.timeout_s:g} s", timed_out=True)
            time.sleep(0.02)

    def cancel(self) -> None:
        self._cancelled.set()
        self._kill_all()

    def _kill_all(self) -> None:
        kill_process_groups([p.pid for p in self.procs if p.poll() is None], self.procs, self.starts)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_S + 1)


def with_own_python(env: Mapping[str, str]) -> dict[str, str]:
    """`python` in a local stage is the interpreter skyflow runs on (its virtualenv, if any)."""
    import sys

    own = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if path.split(os.pathsep)[0] != own:
        path = own + os.pathsep + path
    return {**env, "PATH": path}


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalBackend:
    """Runs stages as local process groups; partitions GPUs between concurrent stages."""

    name = "local"

    def __init__(self, capacity: Capacity | None = None, on_line: Callable[[str, str], None] | None = None,
                 gpu_devices: dict[int, str] | None = None) -> None:
        self._capacity = capacity or detect_capacity()
        self._gpus = GpuAllocator(gpu_devices if gpu_devices is not None else detect_gpus())
        self._on_line = on_line
        self._bash = shutil.which("bash") or "/bin/bash"

    def capacity(self) -> Capacity:
        return self._capacity

    def launch(self, launch: StageLaunch) -> StageHandle:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        script = launch.log_path.parent / "stage.sh"
        script.write_text(_wrapper(launch))
        devices = self._gpus.acquire(launch.gpu_count)
        log = open(launch.log_path, "ab")  # noqa: SIM115 - closed by the handle's release
        procs, pumps = [], []
        try:
            for rank in range(launch.num_nodes):
                env = {**with_own_python(launch.env), "SKYPILOT_NODE_RANK": str(rank)}
                if devices is not None:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
                proc = subprocess.Popen([self._bash, str(script)], cwd=launch.workdir, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                procs.append(proc)
                prefix = f"(node {rank}) " if launch.num_nodes > 1 else ""
                listener = (lambda line, s=launch.stage, cb=self._on_line: cb(s, line)) if self._on_line else None
                assert proc.stdout is not None
                pump = LogPump(proc.stdout, log, launch.secret_values, prefix, listener)
                pump.start()
                pumps.append(pump)
        except OSError:
            kill_process_groups([p.pid for p in procs])
            log.close()
            self._gpus.release(devices, launch.gpu_count)
            raise

        def release() -> None:
            log.close()
            self._gpus.release(devices, launch.gpu_count)

        return LocalStageHandle(procs, pumps, launch.timeout_s, release)

    def abandon(self, leftover: Leftover) -> None:
        kill_process_groups(list(leftover.process_groups))

    def serve(self, launch: StageLaunch) -> LocalService:
        """Start the replicas on free ports (the declared one first); they serve until `skyflow down`."""
        from skyflow.backends.local_service import LocalService, replica_ports

        service = launch.spec.service
        if service is None:
            raise BackendError(f"stage {launch.stage!r} has no service: section", stage=launch.stage)
        ports = replica_ports(service, launch.spec.resources.ports)
        return LocalService(self._start_replicas(launch, ports), ports, service)

    def stop_service(self, leftover: Leftover) -> None:
        kill_process_groups(list(leftover.process_groups))

    def _start_replicas(self, launch: StageLaunch, ports: list[int]) -> list[subprocess.Popen[bytes]]:
        """One detached replica per port, each followed by its masking process: replica, masker, ...

        Output goes through a masking process (not a thread of ours) into the stage log, so the
        replicas outlive this process.
        """
        import json
        import sys

        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        script = launch.log_path.parent / "stage.sh"
        script.write_text(_wrapper(launch))
        replicas = []
        for rank, port in enumerate(ports):
            masker = subprocess.Popen([sys.executable, "-m", "skyflow.backends.masking", str(launch.log_path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True,
                                      env={**os.environ, "SKYFLOW_MASK_VALUES": json.dumps(list(launch.secret_values))})
            env = {**with_own_python(launch.env), "SKYPILOT_NODE_RANK": "0", "SKYFLOW_SERVICE_PORT": str(port),
                   "SKYFLOW_REPLICA_ID": str(rank)}
            proc = subprocess.Popen([self._bash, str(script)], cwd=launch.workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=masker.stdin, stderr=subprocess.STDOUT, start_new_session=True)
            assert masker.stdin is not None
            masker.stdin.close()
            replicas += [proc, masker]
        return replicas


def _wrapper(launch: StageLaunch) -> str:
    """setup, then run, each as its own bash script, as SkyPilot runs them."""
    setup_file = launch.log_path.parent / "setup.sh"
    run_file = launch.log_path.parent / "run.sh"
    run_file.write_text(launch.run + "\n")
    lines = ["#!/usr/bin/env bash"]
    if launch.setup:
        setup_file.write_text(launch.setup + "\n")
        lines.append(f'bash {shlex.quote(str(setup_file))} || {{ code=$?; '
                     'echo "skyflow: setup failed with exit code $code"; exit $code; }')
    lines.append(f"exec bash {shlex.quote(str(run_file))}")
    return "\n".join(lines) + "\n"


def from_context(context: BackendContext) -> LocalBackend:
    return LocalBackend(detect_capacity(context.max_parallel), on_line=context.on_line)
