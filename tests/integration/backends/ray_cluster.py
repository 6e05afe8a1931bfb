"""A real Ray cluster for the Ray backend tests: a head and two worker nodes, processes on 127.0.0.1.

Each node is ``ray start --block`` in its own process group, with its own free ports (GCS, dashboard,
dashboard agent) and small resources (one or two logical CPUs, a 100 MB object store), and is
stopped by SIGTERM to that group: ``ray stop`` would stop every Ray on the machine, not only these.
The nodes get what a cloud node's environment would give them: the S3 endpoint and its credentials
(moto), and this virtualenv's interpreter as their ``python3``. Stages' code packages are installed
under a directory of the session's own (``env_root``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from skyflow.config import RayCluster
from tests.integration.conftest import StoreServer, free_port, stop_group

# Ray refuses several nodes on one host unless told they are meant (its check is for laptops).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           # A stopped job gets this long between SIGTERM and SIGKILL (Ray's default is 3 s).
           "RAY_JOB_STOP_WAIT_TIME_S": "3"}
OBJECT_STORE_BYTES = 100_000_000
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class RayTestCluster:
    """The running cluster: its dashboard address, the config entry naming it, and the S3 it reaches."""

    address: str
    gcs_address: str
    env_root: Path
    s3: StoreServer

    def config(self, **changes: object) -> RayCluster:
        base = {"address": self.address, "nodes": 3, "cpus": 1, "env_root": str(self.env_root)}
        return RayCluster.model_validate({**base, **changes})

    def config_yaml(self, name: str = "lab") -> str:
        return (f"ray_clusters:\n  {name}:\n    address: {self.address}\n    nodes: 3\n    cpus: 1\n"
                f"    env_root: {self.env_root}\n")

    def client(self) -> object:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)


def ray_binary() -> str:
    found = Path(sys.executable).parent / "ray"
    if not found.exists():
        pytest.skip("Ray is not installed in this environment: pip install -e '.[ray]' (make test does)")
    return str(found)


def _node_env(s3: StoreServer) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**os.environ, **RAY_ENV, **AWS_CREDENTIALS, "PATH": path, "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1"}


def _wait(proc: subprocess.Popen[bytes], log: Path, ready: object, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():  # type: ignore[operator]
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not up in {timeout_s} s: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


@contextmanager
def _node(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def _alive_nodes(address: str) -> int:
    """Nodes the dashboard's state API lists as alive (0 while it cannot answer)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/v0/nodes?limit=100", timeout=5) as response:
            nodes = json.loads(response.read())["data"]["result"]["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return sum(1 for n in nodes if n.get("state") == "ALIVE")


@contextmanager
def ray_cluster(root: Path, s3: StoreServer, workers: int = 2) -> Iterator[RayTestCluster]:
    ray = ray_binary()
    env = _node_env(s3)
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = Path(f"/tmp/sfray{os.getpid()}")  # Ray's socket paths must stay short: not under pytest's tmp
    common = ["--block", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(OBJECT_STORE_BYTES),
              "--disable-usage-stats"]
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, temp_dir, True)
        head_log = root / "head.log"
        head = stack.enter_context(_node(
            [ray, "start", "--head", "--port", str(gcs_port), "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(dashboard_port), "--include-dashboard", "true", "--num-cpus", "1",
             "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(temp_dir), *common],
            env, head_log))
        address, gcs = f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}"
        _wait(head, head_log, lambda: _dashboard_up(address), "the Ray head")
        for i in range(workers):  # one at a time: a busy 2-core machine times out raylets started together
            log = root / f"worker-{i}.log"
            worker = stack.enter_context(_node(
                [ray, "start", "--address", gcs, "--num-cpus", "1",
                 "--dashboard-agent-listen-port", str(free_port()), *common], env, log))
            _wait(worker, log, lambda n=i + 2: _alive_nodes(address) == n, f"Ray worker {i}")
        yield RayTestCluster(address, gcs, root / "env", s3)


def _dashboard_up(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def ray_test_cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: StoreServer) -> Iterator[RayTestCluster]:
    with ray_cluster(tmp_path_factory.mktemp("ray"), s3_server) as cluster:
        yield cluster
