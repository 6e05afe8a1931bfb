"""The local backend: each stage a process group on this machine (one process per node).

Every process of an attempt carries the attempt's token in its environment (`SKYFLOW_STAGE_TOKEN`):
when the attempt ends (exit, failure, timeout, cancel, or a later runner abandoning it), its process
groups are ended, and then every process still carrying the token, so children that left the group
(`setsid`, daemons) end with the stage. The token comes from the attempt's log path, which the runner
records before the attempt starts, and is recorded as the attempt's handle too.
"""

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
from pathlib import Path
from typing import TYPE_CHECKING

from skyflow.backends.base import Capacity, Leftover, RemoteHandle, StageExit, StageHandle, StageLaunch
from skyflow.backends.gpus import GpuAllocator, detect_gpus
from skyflow.backends.masking import LogPump
from skyflow.backends.stage_log import StageLog, describe_write_failure
from skyflow.errors import BackendError
from skyflow.processes import (
    KILL_GRACE_S,
    STAGE_TOKEN_VARIABLE,
    attempt_token,
    end_attempt,
    end_processes_with_token,
    kill_process_groups,
    process_start,
)
from skyflow.statedb import release_reserve_above

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
    """The processes of one attempt: one per node, each leading its own process group; all of them,
    and whatever they start, carry ``token`` in their environment."""

    procs: list[subprocess.Popen[bytes]]
    pumps: list[LogPump]
    timeout_s: float | None
    release: Callable[[], None]
    token: str | None = None
    log: StageLog | None = None
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
        # With the process groups, all a later runner needs to end what this attempt left
        return {STAGE_TOKEN_VARIABLE: self.token} if self.token else None

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
            broken = next((p.error for p in self.pumps if p.error is not None), None)
            if broken is not None and self.log is not None:  # the stage cannot be logged: it fails now
                release_reserve_above(self.log.path)  # room for run state to record the failure
                self._kill_all()
                return StageExit(1, describe_write_failure(self.log.path, broken))
            codes = [p.poll() for p in self.procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:  # one node failing fails the stage, as in SkyPilot; stop the others
                self._kill_all()
                return StageExit(failed[0], "cancelled" if self._cancelled.is_set() else
                                 _describe(failed[0]), cancelled=self._cancelled.is_set())
            if all(c == 0 for c in codes):
                # background children die too, and what they started outside the group
                kill_process_groups(self.process_groups, self.procs, self.starts)
                end_processes_with_token(self.token)
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
        end_processes_with_token(self.token)


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
                 gpu_devices: dict[int, str] | None = None, max_log_bytes: int | None = None) -> None:
        """``max_log_bytes``: a stage log is rotated past this size (default: `DEFAULT_MAX_LOG_MB`)."""
        self._capacity = capacity or detect_capacity()
        self._gpus = GpuAllocator(gpu_devices if gpu_devices is not None else detect_gpus())
        self._on_line = on_line
        self._bash = shutil.which("bash") or "/bin/bash"
        self._max_log_bytes = max_log_bytes

    def capacity(self) -> Capacity:
        return self._capacity

    def launch(self, launch: StageLaunch) -> StageHandle:
        try:
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            script = launch.log_path.parent / "stage.sh"
            script.write_text(_wrapper(launch))
            log = StageLog(launch.log_path, self._max_log_bytes)
        except OSError as exc:
            raise _cannot_start(launch, exc) from exc
        devices = self._gpus.acquire(launch.gpu_count)
        token = attempt_token(launch.log_path)
        procs, pumps = [], []
        try:
            for rank in range(launch.num_nodes):
                env = {**with_own_python(launch.env), "SKYPILOT_NODE_RANK": str(rank), STAGE_TOKEN_VARIABLE: token}
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
        except OSError as exc:
            kill_process_groups([p.pid for p in procs])
            end_processes_with_token(token)
            log.close()
            self._gpus.release(devices, launch.gpu_count)
            raise _cannot_start(launch, exc) from exc

        def release() -> None:
            log.close()
            self._gpus.release(devices, launch.gpu_count)

        return LocalStageHandle(procs, pumps, launch.timeout_s, release, token, log)

    def abandon(self, leftover: Leftover) -> None:
        end_attempt(leftover.process_groups, _token_of(leftover), leftover.log_path)

    def serve(self, launch: StageLaunch) -> LocalService:
        """Start the replicas on free ports (the declared one first); they serve until `skyflow down`."""
        from skyflow.backends.local_service import LocalService, replica_ports

        service = launch.spec.service
        if service is None:
            raise BackendError(f"stage {launch.stage!r} has no service: section", stage=launch.stage)
        ports = replica_ports(service, launch.spec.resources.ports)
        token = attempt_token(launch.log_path)
        try:
            replicas = self._start_replicas(launch, ports, token)
        except OSError as exc:
            raise _cannot_start(launch, exc) from exc
        return LocalService(replicas, ports, service, token)

    def stop_service(self, leftover: Leftover) -> None:
        self.abandon(leftover)  # the replicas: the same groups and token as an attempt's

    def _start_replicas(self, launch: StageLaunch, ports: list[int], token: str) -> list[subprocess.Popen[bytes]]:
        """One detached replica per port, each followed by its masking process: replica, masker, ...

        Output goes through a masking process (not a thread of ours) into the stage log, so the
        replicas outlive this process.
        """
        import json
        import sys

        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        script = launch.log_path.parent / "stage.sh"
        script.write_text(_wrapper(launch))
        replicas: list[subprocess.Popen[bytes]] = []  # replica, masker, replica, masker, ...
        try:
            for rank, port in enumerate(ports):
                masker = subprocess.Popen([sys.executable, "-m", "skyflow.backends.masking", str(launch.log_path)],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True,
                                          env={**os.environ,
                                               "SKYFLOW_MASK_VALUES": json.dumps(list(launch.secret_values)),
                                               "SKYFLOW_LOG_MAX_BYTES": str(self._max_log_bytes or "")})
                assert masker.stdin is not None
                try:
                    env = {**with_own_python(launch.env), "SKYPILOT_NODE_RANK": "0",
                           "SKYFLOW_SERVICE_PORT": str(port), "SKYFLOW_REPLICA_ID": str(rank),
                           STAGE_TOKEN_VARIABLE: token}
                    proc = subprocess.Popen([self._bash, str(script)], cwd=launch.workdir, env=env,
                                            stdin=subprocess.DEVNULL, stdout=masker.stdin, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                finally:
                    masker.stdin.close()  # the replica holds the pipe now; without one, the masker ends
                replicas += [proc, masker]
        except BaseException:
            # a replica that cannot start fails the service: the ones already started are not left serving
            kill_process_groups([p.pid for p in replicas], own=replicas)
            raise
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


def _token_of(leftover: Leftover) -> str | None:
    token = (leftover.remote or {}).get(STAGE_TOKEN_VARIABLE)
    return token if isinstance(token, str) else None


def _cannot_start(launch: StageLaunch, exc: OSError) -> BackendError:
    if exc.filename is not None and Path(exc.filename) == launch.workdir:  # the stage's processes start there
        return BackendError(f"cannot start stage {launch.stage!r}: its workdir {launch.workdir} cannot be entered: "
                            f"{exc.strerror or exc}", stage=launch.stage, backend="local")
    if exc.filename is not None:
        where = Path(exc.filename)
        return BackendError(f"cannot start stage {launch.stage!r}: {describe_write_failure(where, exc, '')}",
                            stage=launch.stage, backend="local")
    return BackendError(f"cannot start stage {launch.stage!r}: {exc.strerror or exc}", stage=launch.stage,
                        backend="local")


def from_context(context: BackendContext) -> LocalBackend:
    max_log_bytes = int(context.config.logs.max_stage_log_mb * 2**20)
    return LocalBackend(detect_capacity(context.max_parallel), on_line=context.on_line, max_log_bytes=max_log_bytes)
