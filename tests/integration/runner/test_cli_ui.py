"""`skyflow ui` stopped by SIGTERM off a terminal (a service manager, `kill PID`) takes the MLflow
server and its workers with it: nothing is left holding the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow, signal_another_thread

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running: a zombie (dead, its exit not yet collected by
    its parent, here init once skyflow ui is gone) holds no port and runs nothing."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _send_sigterm(pid: int, to: str) -> None:
    if to == "process":
        os.kill(pid, signal.SIGTERM)  # the process only, as `kill PID` or a service manager sends it
    else:
        signal_another_thread(pid, signal.SIGTERM)


@pytest.mark.parametrize("to", ["process", "another-thread"])
def test_sigterm_stops_the_mlflow_server_and_frees_the_port(skyflow: Skyflow, to: str) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skyflow", "ui", "--port", str(port)], cwd=skyflow.workdir,
                            env=skyflow.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server_groups: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    healthy = response.status == 200
            except OSError:
                time.sleep(0.2)
        assert healthy, f"skyflow ui exited with {proc.poll()}"
        server_groups = {os.getpgid(child) for child in _children(proc.pid)}
        assert server_groups, "no MLflow server process under skyflow ui"
        _send_sigterm(proc.pid, to)
        proc.communicate(timeout=60)
        left = [g for g in server_groups if _group_alive(g)]
        assert not left, f"process groups {left} outlived skyflow ui"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still answers on port {port}"
    finally:
        for group in server_groups | {proc.pid}:
            if _group_alive(group):
                os.killpg(group, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
