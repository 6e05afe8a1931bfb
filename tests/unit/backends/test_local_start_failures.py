"""The local backend when a stage cannot start (its log folder or workdir unusable, a fork refused),
a stage killed by a signal Python has no name for, a cancel that arrives as the stage exits by itself,
what this machine reports when it cannot tell its memory; and local services: a busy port, a probe
that POSTs, a replica never ready, a wait cancelled."""

from __future__ import annotations

import errno
import http.server
import json
import os
import socket
import subprocess
import threading
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.backends import local
from skyflow.backends.base import Capacity
from skyflow.backends.fake import launch_for
from skyflow.backends.local import LocalBackend, detect_capacity
from skyflow.backends.local_service import probe, replica_ports, wait_until_ready
from skyflow.errors import BackendError
from skyflow.spec.models import Service


def _backend(gpus: dict[int, str] | None = None) -> LocalBackend:
    return LocalBackend(Capacity(cpus=2, memory_gb=4, gpus={}, max_parallel=2), gpu_devices=gpus or {})


def test_a_log_folder_that_cannot_be_made_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    launch = replace(launch_for(tmp_path, "true"), log_path=tmp_path / "file" / "attempt" / "stage.log")
    with pytest.raises(BackendError, match=rf"^cannot start stage 'train': writing {tmp_path}/file/attempt failed: "
                                           r"Not a directory$") as caught:
        _backend().launch(launch)
    assert caught.value.stage == "train" and caught.value.backend == "local"


def test_a_missing_workdir_is_named_as_the_workdir(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "true", workdir=tmp_path / "srcc")
    with pytest.raises(BackendError, match=rf"^cannot start stage 'train': its workdir {tmp_path}/srcc cannot be "
                                           r"entered: No such file or directory$"):
        _backend().launch(launch)


def test_a_service_whose_workdir_is_missing_is_named_as_the_workdir(tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "true", workdir=tmp_path / "srcc", spec={"service": {"readiness_probe": "/"}})
    with pytest.raises(BackendError, match=r"^cannot start stage 'train': its workdir .*/srcc cannot be entered"):
        _backend().serve(launch)


def test_a_replica_that_cannot_start_stops_the_replicas_already_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if len(started) == 3:  # replica 0 and its masker, replica 1's masker: replica 1's fork is refused
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(local, "subprocess", types.SimpleNamespace(
        Popen=popen, DEVNULL=subprocess.DEVNULL, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT))
    launch = launch_for(tmp_path, "exec sleep 60", spec={"service": {"readiness_probe": "/", "replicas": 2}})
    with pytest.raises(BackendError, match=r"^cannot start stage 'train': Resource temporarily unavailable$"):
        _backend().serve(launch)
    masker, replica, last_masker = started
    assert replica.wait(timeout=10) < 0  # the serving replica was killed, not left running
    assert masker.wait(timeout=10) is not None and last_masker.wait(timeout=10) is not None


def test_serving_a_stage_without_a_service_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"^stage 'train' has no service: section$"):
        _backend().serve(launch_for(tmp_path, "true"))


def test_a_refused_fork_stops_the_nodes_already_started_and_frees_their_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        started.append(subprocess.Popen(*args, **kwargs))
        return started[0]

    monkeypatch.setattr(local, "subprocess", types.SimpleNamespace(
        Popen=popen, DEVNULL=subprocess.DEVNULL, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT))
    backend = _backend({0: "H100"})
    launch = launch_for(tmp_path, "sleep 60", num_nodes=2, spec={"resources": {"accelerators": "H100:1"}})
    with pytest.raises(BackendError, match=r"^cannot start stage 'train': Resource temporarily unavailable$"):
        backend.launch(launch)
    assert started[0].wait(timeout=10) < 0  # the first node was killed, not left running
    assert backend._gpus._choose(1) == [0]  # its GPU is free again


def test_a_signal_without_a_name_is_reported_by_number(tmp_path: Path) -> None:
    exit_ = _backend().launch(launch_for(tmp_path, "kill -s 35 $$")).wait()
    assert (exit_.exit_code, exit_.reason) == (-35, "killed by signal 35")


def test_a_cancel_that_arrives_after_the_stage_exited_is_still_a_cancel(tmp_path: Path) -> None:
    handle = _backend().launch(launch_for(tmp_path, "exit 0"))
    handle.procs[0].wait(timeout=10)  # type: ignore[attr-defined]
    handle.cancel()
    exit_ = handle.wait()
    assert (exit_.exit_code, exit_.reason, exit_.cancelled) == (-15, "cancelled", True)


def test_memory_that_cannot_be_read_counts_as_none_and_gpus_are_counted_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sysconf(name: str) -> int:
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(os, "sysconf", no_sysconf)  # the os module skyflow.backends.local uses
    monkeypatch.setattr(local, "detect_gpus", lambda: {0: "H100", 1: "H100", 2: "L4"})
    cap = detect_capacity(max_parallel=3)
    assert cap.memory_gb == 0.0 and dict(cap.gpus) == {"H100": 2, "L4": 1} and cap.max_parallel == 3


# -- local services ----------------------------------------------------------------------------------

def test_a_busy_declared_port_gives_the_first_replica_a_free_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = replica_ports(Service(ports=port, replicas=2), ())
    assert len(ports) == 2 and port not in ports and len(set(ports)) == 2


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None, b""))
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_probe_with_post_data_posts_it_as_json_with_its_headers(server: str) -> None:
    service = Service(readiness_probe={"path": "/v1/completions", "post_data": {"prompt": "hi", "max_tokens": 1},
                                       "headers": {"Authorization": "Bearer t"}})
    assert probe(f"{server}/v1/completions", service) is True
    assert _Recorder.seen == [("POST", "/v1/completions", "Bearer t",
                               json.dumps({"prompt": "hi", "max_tokens": 1}).encode())]
    assert probe(f"{server}/health", Service()) is False  # a 503 is not ready


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_replica_that_never_answers_is_not_ready_after_the_initial_delay() -> None:
    url = f"http://127.0.0.1:{_free_port()}/health"
    service = Service(readiness_probe={"path": "/health", "initial_delay_seconds": 0})
    assert wait_until_ready([url], service, [], threading.Event()) == f"not ready after 0 s (probe {url})"


def test_waiting_for_readiness_stops_when_cancelled() -> None:
    cancelled = threading.Event()
    cancelled.set()
    url = f"http://127.0.0.1:{_free_port()}/health"
    assert wait_until_ready([url], Service(readiness_probe="/health"), [], cancelled) == "cancelled"


def test_a_service_scaled_to_zero_replicas_is_ready_at_once() -> None:
    service = Service(readiness_probe="/health", replica_policy={"min_replicas": 0, "max_replicas": 2})
    assert replica_ports(service, ("8000",)) == []
    assert wait_until_ready([], service, [], threading.Event()) is None
