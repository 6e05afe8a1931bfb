"""Service stages on this machine: ports for replicas, the readiness probe, and the running service."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from skyflow.processes import STAGE_TOKEN_VARIABLE, end_processes_with_token, kill_process_groups
from skyflow.spec.models import Service

__all__ = ["LocalService", "probe", "replica_ports", "wait_until_ready"]

PROBE_INTERVAL_S = 0.25


def replica_ports(service: Service, declared: tuple[str, ...]) -> list[int]:
    """The declared port for the first replica when it is free, free ports for the rest."""
    wanted = service.ports or (int(declared[0]) if declared and declared[0].isdigit() else None)
    ports: list[int] = []
    for _ in range(service.replica_count()):
        port = wanted if wanted and not ports and _free(wanted) else _any_free_port()
        ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        # as servers do: a port in TIME_WAIT after the last server stopped is free to serve again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(url: str, service: Service) -> bool:
    """One readiness check: a 2xx answer (POST when the probe has post_data)."""
    spec = service.readiness_probe
    data = None
    if spec.post_data is not None:
        data = (spec.post_data if isinstance(spec.post_data, str) else json.dumps(spec.post_data)).encode()
    request = urllib.request.Request(url, data=data, headers=spec.headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout_seconds) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(urls: list[str], service: Service, procs: list[subprocess.Popen[bytes]],
                     cancelled: threading.Event) -> str | None:
    """None when every replica answers its probe; else why not (exited, timed out, cancelled)."""
    deadline = time.monotonic() + service.readiness_probe.initial_delay_seconds
    pending = list(urls)
    while pending:
        for proc in procs:
            code = proc.poll()
            if code is not None:
                return f"a replica exited with code {code} before it was ready"
        pending = [url for url in pending if not probe(url, service)]
        if not pending:
            return None
        if time.monotonic() > deadline:
            return (f"not ready after {service.readiness_probe.initial_delay_seconds:g} s "
                    f"(probe {', '.join(pending)})")
        if cancelled.wait(PROBE_INTERVAL_S):
            return "cancelled"
    return None


class LocalService:
    """Replicas on this machine (each with its masking process), probed on 127.0.0.1; the replicas'
    processes, and whatever they start, carry ``token`` in their environment."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], ports: list[int], service: Service,
                 token: str | None = None) -> None:
        self.procs, self.ports, self.service, self.token = procs, ports, service, token

    @property
    def endpoint(self) -> str:
        return ", ".join(f"http://127.0.0.1:{port}" for port in self.ports)

    @property
    def process_groups(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def remote(self) -> dict[str, str] | None:
        return {STAGE_TOKEN_VARIABLE: self.token} if self.token else None

    def wait_ready(self, cancel: threading.Event, timeout_s: float) -> str | None:
        urls = [f"http://127.0.0.1:{port}{self.service.readiness_probe.path}" for port in self.ports]
        return wait_until_ready(urls, self.service, self.procs[::2], cancel)

    def stop(self) -> None:
        kill_process_groups(self.process_groups)
        end_processes_with_token(self.token)
