"""The SSH pool backend against hosts that answer like asyncssh connections but fail on purpose: a
driver that never reports its process group, a host whose disk is full, a connection lost mid-stage,
a node killed by a signal, outputs that cannot be copied back, capacity probed once, leftovers named
by old or damaged handles, and the pools in the config.

A host is a fake connection (commands, SFTP and the driver process); everything above it is the
backend's own code on its own event loop thread.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from skyflow.backends.base import Leftover
from skyflow.backends.fake import launch_for
from skyflow.backends.masking import MASK
from skyflow.backends.registry import BackendContext
from skyflow.backends.ssh import PoolHost, RemoteNode, SshBackend, SshBackends, stop_node
from skyflow.backends.ssh_remote import EXIT_STATUS_FILE, PGID_MARKER, HostAddress
from skyflow.config import SkyflowConfig, SshPool
from skyflow.errors import BackendError
from skyflow.planner import Placement

PROBE_OUTPUT = "8\n16384000\nNVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\n"


class Lines:
    """An SSHReader's readline over fixed lines, then EOF."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = list(lines)

    async def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""


class Stdin:
    def __init__(self) -> None:
        self.closed = False

    def write_eof(self) -> None:
        self.closed = True


class Driver:
    """The driver.sh process: what it writes, then how it ends (exit_status None: the session dropped)."""

    def __init__(self, stderr: list[bytes], stdout: list[bytes] = (), exit_status: int | None = 0) -> None:  # type: ignore[assignment]
        self.stderr, self.stdout, self.stdin = Lines(stderr), Lines(list(stdout)), Stdin()
        self.exit_status = exit_status

    async def wait(self) -> Any:
        return types.SimpleNamespace(exit_status=self.exit_status)


class Sftp:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    async def __aenter__(self) -> Sftp:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def open(self, path: str, mode: str, attrs: Any = None) -> Any:
        host = self.host

        class File:
            async def __aenter__(self) -> File:
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            async def write(self, text: str) -> None:
                host.files[path] = text

        return File()

    async def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.host.dirs.append(path)

    async def put(self, local: str, remote: str, **kwargs: Any) -> None:
        self.host.files[remote] = Path(local).read_text() if Path(local).is_file() else "<dir>"

    async def listdir(self, path: str) -> list[str]:
        if self.host.outputs_gone:
            raise asyncssh.SFTPNoSuchFile(f"No such file: {path}")
        return [".", "..", "weights.txt"]

    async def get(self, remote: str, local: str, **kwargs: Any) -> None:
        Path(local).write_text("weights")


class FakeHost:
    """One pool host's open connection: records commands; `fail` maps how a command starts to its error."""

    def __init__(self, name: str, driver: Driver | None = None, fail: dict[str, Exception] | None = None,
                 probe: str = PROBE_OUTPUT, exit_status_file: str = "") -> None:
        self.name, self.driver, self.fail, self.probe = name, driver, fail or {}, probe
        self.exit_status_file = exit_status_file
        self.commands: list[str] = []
        self.files: dict[str, str] = {}
        self.dirs: list[str] = []
        self.outputs_gone = False
        self.spawn_error: Exception | None = None

    def is_closed(self) -> bool:
        return False

    async def run(self, command: str, check: bool = False, input: str | None = None) -> Any:
        self.commands.append(command)
        for start, error in self.fail.items():
            if command.startswith(start):
                raise error
        if command.startswith("nproc"):
            return types.SimpleNamespace(stdout=self.probe, exit_status=0)
        if command.startswith("cat ") and EXIT_STATUS_FILE in command:
            return types.SimpleNamespace(stdout=self.exit_status_file, exit_status=0)
        return types.SimpleNamespace(stdout="", exit_status=0)

    def start_sftp_client(self) -> Sftp:
        return Sftp(self)

    async def create_process(self, command: str, encoding: Any = None) -> Driver:
        self.commands.append(command)
        if self.spawn_error is not None:
            raise self.spawn_error
        assert self.driver is not None
        return self.driver

    def kills(self) -> list[str]:
        return [c for c in self.commands if c.startswith("bash -c") and "skyflow_end_group()" in c]


@pytest.fixture
def backends() -> Iterator[list[SshBackend]]:
    made: list[SshBackend] = []
    yield made
    for backend in made:
        backend._loop.loop.call_soon_threadsafe(backend._loop.loop.stop)


def _backend(made: list[SshBackend], *hosts: FakeHost, **pool: Any) -> SshBackend:
    backend = SshBackend("lab", SshPool(hosts=tuple(h.name for h in hosts), **pool), known_hosts=None)
    made.append(backend)
    for host, fake in zip(backend.hosts, hosts, strict=True):
        host.conn, host.root, host.ip = fake, f"/srv/{fake.name}", "10.0.0.1"
    return backend


def _placement(infra: str = "ssh/lab", num_nodes: int = 1) -> Placement:
    return Placement(infra=infra, cloud="ssh", region="lab", zone=None, instance_type="", accelerators={},
                     use_spot=False, num_nodes=num_nodes, hourly_usd=0.0, hours=0.0)


def _launch(tmp_path: Path, num_nodes: int = 1, infra: str = "ssh/lab") -> Any:
    workdir = tmp_path / "work"
    (workdir / "src").mkdir(parents=True, exist_ok=True)
    (workdir / "src" / "train.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir(exist_ok=True)
    return launch_for(tmp_path, "python src/train.py", setup="pip install -r req.txt", num_nodes=num_nodes,
                      placement=_placement(infra, num_nodes), workdir=workdir, secrets=("s3cr3t",),
                      inputs={"data": tmp_path / "data"}, outputs={"model": tmp_path / "out" / "model"})


def _started(stdout: list[bytes] = (), exit_status: int | None = 0) -> Driver:  # type: ignore[assignment]
    return Driver([f"{PGID_MARKER}4242\n".encode()], stdout, exit_status)


def test_a_driver_that_reports_no_process_group_fails_the_launch_and_stops_every_node(
        tmp_path: Path, backends: list[SshBackend]) -> None:
    refused = FakeHost("h1", Driver([b"bash: /srv/h1/driver.sh: Permission denied\n"], exit_status=126))
    fine = FakeHost("h2", _started())
    backend = _backend(backends, refused, fine)
    with pytest.raises(BackendError, match=r"^ssh pool 'lab': the stage did not start on host h1: "
                                           r"bash: /srv/h1/driver.sh: Permission denied$"):
        backend.launch(_launch(tmp_path, num_nodes=2))
    # both drivers were told to stop, and the node that did start was ended by its group and token
    assert refused.driver.stdin.closed and fine.driver.stdin.closed  # type: ignore[union-attr]
    assert any("skyflow_end_group 4242" in c for c in fine.kills())
    assert [h.busy for h in backend.hosts] == [0, 0]  # the hosts are free for the next stage
    # what the node got before: the workdir mirrored, the scripts, the setup
    mirrored = [path for path in fine.files if path.startswith("/srv/h2/workdirs/")]
    assert len(mirrored) == 1 and mirrored[0].endswith("/src/train.py") and fine.files[mirrored[0]] == "print('hi')\n"
    assert fine.files["/srv/h2/runs/r1/train/attempt-1/node-1/setup.sh"] == "pip install -r req.txt\n"


def test_a_driver_that_says_nothing_is_reported_as_no_answer(tmp_path: Path, backends: list[SshBackend]) -> None:
    backend = _backend(backends, FakeHost("h1", Driver([])))
    with pytest.raises(BackendError, match=r"^ssh pool 'lab': the stage did not start on host h1: no answer$"):
        backend.launch(_launch(tmp_path))


def test_a_driver_that_cannot_be_spawned_is_a_backend_error_naming_the_stage(
        tmp_path: Path, backends: list[SshBackend]) -> None:
    host = FakeHost("h1")
    host.spawn_error = asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "too many sessions")
    backend = _backend(backends, host)
    with pytest.raises(BackendError, match=r"^ssh pool 'lab': could not start stage 'train': too many sessions$") \
            as caught:
        backend.launch(_launch(tmp_path))
    assert caught.value.stage == "train" and backend.hosts[0].busy == 0


def test_a_full_disk_on_the_host_fails_preparing_the_stage_with_the_hosts_words(
        tmp_path: Path, backends: list[SshBackend]) -> None:
    host = FakeHost("h1:2222", fail={"rm ": OSError(28, "No space left on device")})
    backend = _backend(backends, host)
    with pytest.raises(BackendError, match=r"^ssh pool 'lab': preparing stage 'train' on host h1:2222 failed: "
                                           r"\[Errno 28\] No space left on device$"):
        backend.launch(_launch(tmp_path))
    assert backend.hosts[0].busy == 0 and host.kills() == []


def test_a_dropped_session_is_a_lost_connection_naming_host_and_node(tmp_path: Path,
                                                                     backends: list[SshBackend]) -> None:
    host = FakeHost("h1", _started([b"epoch 1 s3cr3t\n"], exit_status=None))
    exit_ = _backend(backends, host).launch(_launch(tmp_path)).wait()
    assert (exit_.exit_code, exit_.reason) == (255, "lost the connection to host h1 (node 0)")
    assert (tmp_path / "attempt" / "stage.log").read_text() == f"epoch 1 {MASK}\n"


def test_a_kill_status_the_host_cannot_confirm_is_reported_as_an_exit_code(tmp_path: Path,
                                                                          backends: list[SshBackend]) -> None:
    host = FakeHost("h1", _started(exit_status=137), fail={"cat ": asyncssh.ConnectionLost("connection reset")})
    exit_ = _backend(backends, host).launch(_launch(tmp_path)).wait()
    assert (exit_.exit_code, exit_.reason) == (137, "exit code 137 on host h1 (node 0)")


def test_a_signal_without_a_name_is_reported_by_number(tmp_path: Path, backends: list[SshBackend]) -> None:
    host = FakeHost("h1", _started(exit_status=128 + 35))
    exit_ = _backend(backends, host).launch(_launch(tmp_path)).wait()
    assert (exit_.exit_code, exit_.reason) == (-35, "killed by signal 35 on host h1 (node 0)")


def test_outputs_that_cannot_be_copied_back_fail_the_stage_naming_the_host(tmp_path: Path,
                                                                          backends: list[SshBackend]) -> None:
    host = FakeHost("h1", _started())
    host.outputs_gone = True
    (tmp_path / "out" / "model").mkdir(parents=True)
    exit_ = _backend(backends, host).launch(_launch(tmp_path)).wait()
    assert exit_.exit_code == 1
    assert exit_.reason == "could not copy outputs back from host h1: No such file: /srv/h1/runs/r1/train/" \
                           "attempt-1/node-0/outputs/model"


def test_outputs_are_copied_back_and_the_node_folder_removed(tmp_path: Path, backends: list[SshBackend]) -> None:
    host = FakeHost("h1", _started())
    (tmp_path / "out" / "model").mkdir(parents=True)
    exit_ = _backend(backends, host).launch(_launch(tmp_path)).wait()
    assert exit_.ok and (tmp_path / "out" / "model" / "weights.txt").read_text() == "weights"
    assert host.commands[-1] == "rm -rf /srv/h1/runs/r1/train/attempt-1/node-0"


def test_capacity_is_probed_once_and_a_host_that_fails_its_probe_adds_nothing(backends: list[SshBackend]) -> None:
    gpu = FakeHost("h1")
    broken = FakeHost("h2", fail={"nproc;": asyncssh.ConnectionLost("connection reset")})
    backend = _backend(backends, gpu, broken)
    cap = backend.capacity()
    assert (cap.cpus, cap.memory_gb, dict(cap.gpus), cap.max_parallel) == (8.0, 15.6, {"H100": 2}, 1)
    assert backend.capacity() is cap
    assert [c for c in gpu.commands if c.startswith("nproc")] and len(gpu.commands) == 1


def test_a_node_that_never_started_is_not_signalled() -> None:
    host = FakeHost("h1")
    asyncio.run(stop_node(RemoteNode(0, PoolHost(HostAddress("h1"), conn=host), "/srv/h1/node-0")))
    assert host.commands == []


def test_abandon_ends_the_groups_a_handle_names_on_this_pool_and_skips_the_rest(backends: list[SshBackend]) -> None:
    h1, h2 = FakeHost("h1"), FakeHost("h2")
    backend = _backend(backends, h1, h2)
    backend.abandon(Leftover(remote={"pool": "lab", "groups": [
        ["h1", 4242],  # recorded before nodes had tokens: the group only
        ["h2", 77, "not a token!"],  # a token that is not one is never searched for
        ["elsewhere", 5, "abc"], "h2", ["h1"], ["h1", 1, "a", "b"]]}))
    (h1_kill,), (h2_kill,) = h1.kills(), h2.kills()
    assert h1_kill.endswith("skyflow_end_group 4242\nexit 0\n'") and "skyflow_end_token " not in h1_kill
    assert h2_kill.endswith("skyflow_end_group 77\nexit 0\n'")


def test_abandon_with_a_damaged_handle_touches_no_host(backends: list[SshBackend]) -> None:
    host = FakeHost("h1")
    backend = _backend(backends, host)
    backend.abandon(Leftover(remote={"pool": "lab", "groups": "h1:4242"}))
    backend.abandon(Leftover(remote=None))
    assert host.commands == []


# -- the configured pools ----------------------------------------------------------------------------

def _pools(made: list[SshBackend], **pools: tuple[FakeHost, ...]) -> SshBackends:
    config = SkyflowConfig(ssh_pools={name: SshPool(hosts=tuple(h.name for h in hosts))
                                      for name, hosts in pools.items()})
    backends = SshBackends(BackendContext(config=config))
    for name, hosts in pools.items():
        backend = backends.pool(name)
        made.append(backend)
        for host, fake in zip(backend.hosts, hosts, strict=True):
            host.conn, host.root, host.ip = fake, f"/srv/{fake.name}", "10.0.0.1"
    return backends


def test_an_unknown_pool_names_the_configured_ones_and_the_closest(backends: list[SshBackend]) -> None:
    pools = _pools(backends, lab=(FakeHost("h1"),), lab2=(FakeHost("h2"),))
    with pytest.raises(BackendError, match=r"^no ssh pool 'labs' in the skyflow config \(configured: lab, lab2\)\. "
                                           r"Did you mean lab, lab2\?$"):
        pools.pool("labs")
    with pytest.raises(BackendError, match=r"^no ssh pool 'gpu' in the skyflow config \(configured: lab, lab2\)\.$"):
        pools.pool("gpu")


def test_the_pools_capacity_is_the_sum_of_their_hosts(backends: list[SshBackend]) -> None:
    pools = _pools(backends, lab=(FakeHost("h1"), FakeHost("h2")), cpu=(FakeHost("c1", probe="4\n8192000\n"),))
    cap = pools.capacity()
    assert (cap.cpus, cap.memory_gb, dict(cap.gpus), cap.max_parallel) == (20.0, 39.0, {"H100": 4}, 3)


def test_a_stage_placed_elsewhere_is_refused_and_other_pools_leftovers_are_ignored(
        tmp_path: Path, backends: list[SshBackend]) -> None:
    host = FakeHost("h1")
    pools = _pools(backends, lab=(host,))
    with pytest.raises(BackendError, match=r"^stage 'train' is placed on 'kubernetes/gke', not on an ssh pool "
                                           r"\(ssh/NAME\)$"):
        pools.launch(_launch(tmp_path, infra="kubernetes/gke"))
    pools.abandon(Leftover(remote={"pool": "gone", "groups": [["h1", 4242, "abc"]]}))
    assert host.commands == []
