"""Real OpenSSH servers for the SSH pool tests: on loopback, and in network namespaces of their own.

Every sshd gets its own host key, an authorized_keys file holding a key made here, a free port and
``PasswordAuthentication no``/``UsePAM no``/``StrictModes no``; it runs in its own process group and
is stopped by it. The namespaced hosts sit on a bridge with the project's own 10.250.0.0/24
addresses, so nodes reach each other the way pool hosts on one LAN do; the Ray tests reuse ``lan``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from skyflow.config import SshPool
from tests.integration.conftest import free_port, stop_group

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshKeys:
    """A client key pair authorized on every test sshd, the host key they share, and known_hosts."""

    root: Path
    identity_file: Path
    host_key: Path
    authorized_keys: Path

    def known_hosts_line(self, ip: str, port: int) -> str:
        return f"[{ip}]:{port} {self.host_key.with_suffix('.pub').read_text().split()[0]} " \
               f"{self.host_key.with_suffix('.pub').read_text().split()[1]}\n"


@dataclass(frozen=True)
class SshHost:
    ip: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH sshd is not installed; run tests/services/install-system.sh")
    root = tmp_path_factory.mktemp("ssh")
    for name in ("id_client", "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    authorized = root / "authorized_keys"
    shutil.copy(root / "id_client.pub", authorized)
    (root / "id_client").chmod(0o600)
    return SshKeys(root, root / "id_client", root / "host_key", authorized)


def _sshd_config(keys: SshKeys, ip: str, port: int) -> Path:
    path = keys.root / f"sshd-{ip}-{port}.conf"
    path.write_text(f"Port {port}\nListenAddress {ip}\nHostKey {keys.host_key}\n"
                    f"AuthorizedKeysFile {keys.authorized_keys}\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
                    "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxSessions 50\n"
                    "MaxStartups 50\nLogLevel ERROR\n")
    return path


@contextmanager
def run_sshd(keys: SshKeys, ip: str = "127.0.0.1", netns: str | None = None) -> Iterator[SshHost]:
    """One sshd on ``ip`` (inside ``netns`` when given) until the block ends."""
    os.makedirs("/run/sshd", exist_ok=True)
    port = free_port()
    cmd = [SSHD, "-D", "-e", "-f", str(_sshd_config(keys, ip, port))]
    cmd = _without_shell_rc(keys, cmd)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_open(proc, ip, port)
        yield SshHost(ip, port, proc.pid)
    finally:
        stop_group(proc)


def _without_shell_rc(keys: SshKeys, cmd: list[str]) -> list[str]:
    """Give the host an empty ~/.bashrc when a private mount namespace is allowed.

    bash sources ~/.bashrc for every SSH command; this machine's (pyenv init and rehash under one
    global lock) would make each remote command of every test host wait on the others. A pool host
    is another machine with its own startup files, so the test hosts get an empty one.
    """
    bashrc = Path("~/.bashrc").expanduser()
    if not bashrc.is_file() or not shutil.which("unshare"):
        return cmd
    empty = keys.root / "empty-bashrc"
    empty.touch()
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return cmd
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "_", str(empty), str(bashrc), *cmd]


def _wait_open(proc: subprocess.Popen[bytes], ip: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"sshd on {ip}:{port} exited with {proc.returncode}: {err[-2000:]}")
        try:
            socket.create_connection((ip, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not open {ip}:{port} in {timeout_s} s") from None
            time.sleep(0.05)


def write_known_hosts(keys: SshKeys, hosts: list[SshHost]) -> Path:
    path = keys.root / f"known_hosts-{uuid.uuid4().hex[:8]}"
    path.write_text("".join(keys.known_hosts_line(h.ip, h.port) for h in hosts))
    return path


@dataclass(frozen=True)
class SshPoolSetup:
    """A pool of running sshd hosts as the skyflow config declares it, and the known_hosts to trust them."""

    hosts: list[SshHost]
    pool: SshPool
    known_hosts: Path
    keys: SshKeys

    def config_yaml(self, name: str = "lab") -> str:
        hosts = ", ".join(f'"{h.address}"' for h in self.hosts)
        return (f"ssh_pools:\n  {name}:\n    hosts: [{hosts}]\n    user: {self.pool.user}\n"
                f"    identity_file: {self.pool.identity_file}\n    workdir_root: {self.pool.workdir_root}\n"
                f"    hourly_usd: 0\n")


def make_pool(keys: SshKeys, hosts: list[SshHost], workdir_root: Path) -> SshPoolSetup:
    pool = SshPool(hosts=tuple(h.address for h in hosts), user=getpass.getuser(),
                   identity_file=str(keys.identity_file), workdir_root=str(workdir_root))
    return SshPoolSetup(hosts, pool, write_known_hosts(keys, hosts), keys)


@pytest.fixture(scope="session")
def loopback_hosts(ssh_keys: SshKeys) -> Iterator[list[SshHost]]:
    """Two sshd processes on 127.0.0.1, each on its own port: two pool hosts on this machine."""
    with ExitStack() as stack:
        yield [stack.enter_context(run_sshd(ssh_keys)) for _ in range(2)]


@pytest.fixture
def loopback_pool(ssh_keys: SshKeys, loopback_hosts: list[SshHost], tmp_path: Path) -> SshPoolSetup:
    return make_pool(ssh_keys, loopback_hosts, tmp_path / "remote")


# --- hosts with addresses of their own -------------------------------------------------------------

NETNS_SUBNET = "10.250.0"  # the project's own /24, cut into /27 blocks: one per bridge alive at once
BLOCK_SIZE = 32


@dataclass(frozen=True)
class Lan:
    """Network namespaces on one bridge: this side's address on it, and [(netns, ip)] of the members."""

    gateway: str
    members: list[tuple[str, str]]


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can (a probe namespace is made
    and removed)."""
    if not shutil.which("ip"):
        return "`ip` (iproute2) is not installed; run tests/services/install-system.sh"
    probe = f"sfprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here (needs root/CAP_NET_ADMIN): {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextmanager
def _bridge_lock() -> Iterator[None]:
    """Held while a bridge picks its block: test workers (and other sessions) make theirs at once."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "skyflow-test-netns.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_block() -> int:
    """The first /27 of the project's /24 that no interface here has an address in."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    used = {int(word.split("/")[0].rsplit(".", 1)[1]) // BLOCK_SIZE for word in shown.split()
            if word.startswith(f"{NETNS_SUBNET}.")}
    free = [b for b in range(256 // BLOCK_SIZE) if b not in used]
    if not free:
        raise RuntimeError(f"every block of {NETNS_SUBNET}.0/24 is taken by a bridge here")
    return free[0] * BLOCK_SIZE


def _kill_members(ns: str) -> None:
    """SIGKILL whatever still runs in ``ns`` (only what the fixtures started in it), by pid."""
    listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in listed.stdout.split():
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextmanager
def lan(count: int) -> Iterator[Lan]:
    """``count`` network namespaces on one bridge, with the block's first address on this side.

    Each bridge gets a /27 of 10.250.0.0/24 that no other bridge here has (the first is
    10.250.0.1 with members from 10.250.0.10): the SSH and Ray tests may each hold one at once.
    Whatever is still running in a namespace when the block ends is killed before it is removed.
    """
    tag = uuid.uuid4().hex[:6]
    bridge, made_ns, made_links = f"sfbr{tag}", [], []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        made_links.append(bridge)
        with _bridge_lock():
            base = _free_block()
            gateway = f"{NETNS_SUBNET}.{base + 1}"
            _ip("addr", "add", f"{gateway}/27", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts = []
        for i in range(count):
            ns, outer, inner, ip = f"sf{tag}n{i}", f"sf{tag}h{i}", f"sf{tag}c{i}", f"{NETNS_SUBNET}.{base + 10 + i}"
            _ip("netns", "add", ns)
            made_ns.append(ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            made_links.append(outer)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{ip}/27", "dev", inner, netns=ns)
            _ip("link", "set", inner, "up", netns=ns)
            _ip("link", "set", "lo", "up", netns=ns)
            hosts.append((ns, ip))
        yield Lan(gateway, hosts)
    finally:
        for ns in made_ns:
            _kill_members(ns)
        for link in reversed(made_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for ns in made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="session")
def netns_hosts(ssh_keys: SshKeys) -> Iterator[list[SshHost]]:
    """Two sshd hosts, each in its own network namespace with its own 10.250.0.x address."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    with lan(2) as net, ExitStack() as stack:
        yield [stack.enter_context(run_sshd(ssh_keys, ip, netns=ns)) for ns, ip in net.members]
