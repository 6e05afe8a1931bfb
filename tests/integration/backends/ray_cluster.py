"""A real Ray cluster for the Ray backend tests: a head and two worker nodes, each a host of its own.

Where network namespaces can be made (root or CAP_NET_ADMIN, and `ip`: as on CI), every node runs
in a namespace of its own on one bridge (``lan`` in conftest.py), started with ``ip netns exec NS
ray start --node-ip-address IP``, so the nodes are three hosts with three addresses that reach each
other, and this machine reaches the head's dashboard, over that bridge. Elsewhere they fall back to
processes on 127.0.0.1; under CI=true that fallback fails instead.

Each node is ``ray start --block`` in its own process group, with small resources (one logical CPU,
a 100 MB object store), and is stopped by SIGTERM to that group, SIGKILL 3 s later: ``ray stop``
would stop every Ray on the machine, not only these. The namespaces go when the session ends. The
nodes get what a cloud node's environment would give them: the S3 endpoint and its credentials (a
moto server of the cluster's own, on this side of the bridge), and this virtualenv's interpreter as
their ``python3``. Stages' code packages are installed under a directory of the session's own
(``env_root``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from skyflow.config import RayCluster
from tests.integration.backends.conftest import lan, netns_unavailable
from tests.integration.conftest import StoreServer, free_port

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Ray refuses several nodes on one host unless told they are meant (its check is for laptops).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           # A stopped job gets this long between SIGTERM and SIGKILL (Ray's default is 3 s).
           "RAY_JOB_STOP_WAIT_TIME_S": "3"}
OBJECT_STORE_BYTES = 100_000_000
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RayTestCluster:
    """The running cluster: its dashboard address, the config entry naming it, the S3 it reaches, and
    its nodes' addresses (head first; on loopback, the one address Ray reports for all three)."""

    address: str
    gcs_address: str
    env_root: Path
    s3: StoreServer
    node_ips: tuple[str, ...]
    namespaced: bool

    def config(self, **changes: object) -> RayCluster:
        base = {"address": self.address, "nodes": 3, "cpus": 1, "env_root": str(self.env_root)}
        return RayCluster.model_validate({**base, **changes})

    def config_yaml(self, name: str = "lab") -> str:
        return (f"ray_clusters:\n  {name}:\n    address: {self.address}\n    nodes: 3\n    cpus: 1\n"
                f"    env_root: {self.env_root}\n")

    def client(self) -> JobSubmissionClient:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)


def ray_binary() -> str:
    found = Path(sys.executable).parent / "ray"
    if not found.exists():
        pytest.skip("Ray is not installed in this environment: pip install 'ray[default]>=2.44,<3' (make test does)")
    return str(found)


def _node_env(s3: StoreServer) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {**os.environ, **RAY_ENV, **AWS_CREDENTIALS, "PATH": path, "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1"}


def _wait(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], what: str,
          timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not up in {timeout_s} s: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float = 3.0) -> None:
    """SIGTERM each process group at once; SIGKILL what is left of the groups after ``grace_s`` or once
    their leaders are gone. A raylet drains for about 9 s on SIGTERM and ``ray start`` outlives it:
    nothing of a test node is worth that wait."""
    for proc in procs:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start(cmd, env, log)
    try:
        yield proc
    finally:
        _stop([proc])


def _in(netns: str | None, cmd: list[str]) -> list[str]:
    return cmd if netns is None else ["ip", "netns", "exec", netns, *cmd]


def _opens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextmanager
def moto_s3(host: str, root: Path) -> Iterator[StoreServer]:
    """A moto S3 server listening on ``host`` (the bridge's address on this side, so that both this
    machine and the namespaced nodes reach it)."""
    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    log = root / "moto.log"
    with _process([moto, "-H", host, "-p", str(port)], dict(os.environ), log) as proc:
        _wait(proc, log, lambda: _opens(host, port), "the moto S3 server", timeout_s=60)
        endpoint = f"http://{host}:{port}"
        yield StoreServer("s3", endpoint, {"key": "testing", "secret": "testing", "client_kwargs": {
            "endpoint_url": endpoint, "region_name": "us-east-1"}}, proc)


def _alive_nodes(address: str) -> list[str]:
    """The addresses of the nodes the dashboard's state API lists as alive (none while it cannot answer)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/v0/nodes?limit=100", timeout=5) as response:
            nodes = json.loads(response.read())["data"]["result"]["result"]
        return sorted(str(n["node_ip"]) for n in nodes if n.get("state") == "ALIVE")
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _has_nodes(address: str, count: int) -> bool:
    return len(_alive_nodes(address)) == count


def _dashboard_up(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def ray_cluster(root: Path, hosts: list[tuple[str | None, str]], s3: StoreServer) -> Iterator[RayTestCluster]:
    """A head on ``hosts[0]`` and a worker on each of the others: (netns or None, node ip)."""
    ray = ray_binary()
    env = _node_env(s3)
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = Path(f"/tmp/sfray{os.getpid()}")  # Ray's socket paths must stay short: not under pytest's tmp
    common = ["--block", "--object-store-memory", str(OBJECT_STORE_BYTES), "--num-cpus", "1",
              "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    (head_ns, head_ip), workers = hosts[0], hosts[1:]
    nodes: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, temp_dir, True)
        stack.callback(_stop, nodes)  # all at once, workers and head
        head_log = root / "head.log"
        head = _start(_in(head_ns, [
            ray, "start", "--head", "--node-ip-address", head_ip, "--port", str(gcs_port),
            "--dashboard-host", head_ip, "--dashboard-port", str(dashboard_port), "--include-dashboard", "true",
            "--dashboard-agent-listen-port", str(free_port()), *common]), env, head_log)
        nodes.append(head)
        address, gcs = f"http://{head_ip}:{dashboard_port}", f"{head_ip}:{gcs_port}"
        _wait(head, head_log, lambda: _dashboard_up(address), "the Ray head")
        # one at a time: a busy 2-core machine times out raylets started together
        for i, (ns, ip) in enumerate(workers):
            log = root / f"worker-{i}.log"
            worker = _start(_in(ns, [ray, "start", "--address", gcs, "--node-ip-address", ip,
                                     "--dashboard-agent-listen-port", str(free_port()), *common]), env, log)
            nodes.append(worker)
            _wait(worker, log, partial(_has_nodes, address, i + 2), f"Ray worker {i} ({ip})")
        ips, reported = tuple(ip for _, ip in hosts), _alive_nodes(address)
        if head_ns is None:  # on loopback Ray reports this machine's address for every node
            ips = tuple(reported)
        assert reported == sorted(ips), (reported, ips)
        yield RayTestCluster(address, gcs, root / "env", s3, ips, namespaced=head_ns is not None)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextmanager
def started_cluster(root: Path, workers: int = 2) -> Iterator[RayTestCluster]:
    """The cluster in network namespaces where they can be made, else on 127.0.0.1 (never under CI)."""
    ray_binary()
    reason = netns_unavailable()
    with ExitStack() as stack:
        if reason is None:
            net = stack.enter_context(lan(1 + workers))
            hosts: list[tuple[str | None, str]] = list(net.members)
            s3 = stack.enter_context(moto_s3(net.gateway, root))
        elif _ci():
            pytest.fail(f"the Ray nodes must be hosts of their own under CI=true: {reason}", pytrace=False)
        else:
            warnings.warn(f"the Ray test nodes run on 127.0.0.1, not in network namespaces: {reason}",
                          stacklevel=1)
            hosts = [(None, LOOPBACK)] * (1 + workers)
            s3 = stack.enter_context(moto_s3(LOOPBACK, root))
        yield stack.enter_context(ray_cluster(root, hosts, s3))


@pytest.fixture(scope="module")
def ray_test_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayTestCluster]:
    with started_cluster(tmp_path_factory.mktemp("ray")) as cluster:
        yield cluster
