"""SSH node pools: each node of a stage a process group on a pool host, driven over asyncssh.

asyncssh rather than paramiko: one event loop drives every host, node and log stream of the pool
without a thread per channel, and its SFTP client copies whole trees. Per attempt and node the host
gets ``<workdir_root>/runs/<run>/<stage>/attempt-<n>/node-<rank>/`` holding a copy of the workdir
(synced by digest into a per-host mirror first), the inputs, the outputs and the scripts.

Every process of a node carries the node's own token in its environment (`SKYFLOW_STAGE_TOKEN`):
when the node ends (exit, failure, timeout, cancel, the runner gone, or a later runner abandoning
the attempt), its process group is ended on the host, and then every process still carrying the
token, so children that left the group (`setsid`, daemons) end with the stage. Each node's host,
group and token are recorded as the attempt's handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from skyflow.backends.base import Capacity, Leftover, RemoteHandle, StageExit, StageHandle, StageLaunch
from skyflow.backends.masking import mask_secrets
from skyflow.backends.ssh_remote import (
    EXIT_STATUS_FILE,
    PGID_MARKER,
    PROBE_COMMAND,
    RUN_ENV_FILE,
    HostAddress,
    driver_script,
    env_file,
    kill_command,
    killed_by,
    parse_probe,
    remote_env,
    root_expression,
    run_env_script,
    stage_script,
)
from skyflow.backends.ssh_sync import DigestCache, get_dir_contents, put_dir, sync_tree
from skyflow.errors import BackendError
from skyflow.processes import STAGE_TOKEN_VARIABLE, new_stage_token

if TYPE_CHECKING:
    from skyflow.backends.registry import BackendContext

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
FIRST_COMMAND_TIMEOUT_S = 120.0


class _LoopThread:
    """An asyncio loop on a daemon thread; the synchronous Backend API submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="skyflow-ssh", daemon=True).start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        result: T = self.submit(coro).result(timeout_s)
        return result


@dataclass
class PoolHost:
    """One host of the pool: its address, its open connection, and its resolved workdir_root."""

    address: HostAddress
    conn: Any = None
    root: str = ""
    ip: str = ""
    busy: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sync_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class RemoteNode:
    """One node of a launched attempt: where it runs, the driver process watching it, and the token
    every process of the node carries (one per node: the hosts of a pool may share a machine)."""

    rank: int
    host: PoolHost
    node_dir: str
    token: str = field(default_factory=new_stage_token)
    process: Any = None
    pgid: int = 0


class SshBackend:
    """Runs stages on the hosts of one SSH pool."""

    def __init__(self, pool_name: str, pool: Any, on_line: Callable[[str, str], None] | None = None,
                 known_hosts: Any = (), connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.name = f"ssh/{pool_name}"
        self.pool_name = pool_name
        self.pool = pool
        self.hosts = [PoolHost(HostAddress.parse(h, pool_name)) for h in pool.hosts]
        self._on_line = on_line
        # () means asyncssh's default (~/.ssh/known_hosts); None turns host key checks off.
        self._known_hosts = known_hosts
        self._connect_timeout_s = connect_timeout_s
        self._digests = DigestCache()
        self._loop = _LoopThread()
        self._capacity: Capacity | None = None
        self._pick_lock = threading.Lock()

    # -- Backend protocol ---------------------------------------------------------------------
    def capacity(self) -> Capacity:
        """Per host the configured cpus/memory/GPUs, else what the host reports; unreachable hosts add nothing."""
        if self._capacity is None:
            probes = self._loop.run(self._probe_all())
            cpus = sum(p[0] for p in probes)
            memory_gb = sum(p[1] for p in probes)
            gpus: dict[str, int] = {}
            for _, _, host_gpus in probes:
                for name, count in host_gpus.items():
                    gpus[name] = gpus.get(name, 0) + count
            self._capacity = Capacity(cpus=cpus, memory_gb=round(memory_gb, 1), gpus=gpus,
                                      max_parallel=max(1, len(probes)))
        return self._capacity

    def launch(self, launch: StageLaunch) -> StageHandle:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        hosts = self._pick_hosts(launch)
        try:
            nodes = self._loop.run(self._start(launch, hosts))
        except BaseException:
            self._release(hosts)
            raise
        log = open(launch.log_path, "ab")  # noqa: SIM115 - closed when the attempt ends
        handle = SshStageHandle(self, launch, nodes, log)
        handle.future = self._loop.submit(handle.supervise())
        return handle

    def abandon(self, leftover: Leftover) -> None:
        """Stop what a dead runner's attempt left on the pool's hosts: each node's process group,
        then the processes carrying its token.

        A node's driver also stops its stage when its SSH session drops; this covers a host that
        kept the session's processes alive (the handle names each host, group and token)."""
        by_name = {str(h.address): h for h in self.hosts}
        targets = _recorded_nodes((leftover.remote or {}).get("groups"), by_name)
        if targets:
            self._loop.run(_kill_groups(self, targets))

    # -- hosts and connections ----------------------------------------------------------------
    def _pick_hosts(self, launch: StageLaunch) -> list[PoolHost]:
        if launch.num_nodes > len(self.hosts):
            raise BackendError(f"stage {launch.stage!r} asks for {launch.num_nodes} nodes; ssh pool "
                               f"{self.pool_name!r} has {len(self.hosts)} host(s). Add hosts or lower num_nodes.",
                               stage=launch.stage, backend=self.name)
        with self._pick_lock:  # the least busy hosts, in pool order among equals
            chosen = sorted(self.hosts, key=lambda h: h.busy)[:launch.num_nodes]
            for host in chosen:
                host.busy += 1
        return chosen

    def _release(self, hosts: list[PoolHost]) -> None:
        with self._pick_lock:
            for host in hosts:
                host.busy -= 1

    async def _connect(self, host: PoolHost) -> Any:
        import asyncssh

        async with host.lock:
            if host.conn is not None and not host.conn.is_closed():
                return host.conn
            keys = [str(Path(self.pool.identity_file).expanduser())] if self.pool.identity_file else ()
            where = f"{self.pool.user + '@' if self.pool.user else ''}{host.address}"
            try:
                conn = await asyncssh.connect(host.address.host, port=host.address.port, username=self.pool.user or (),
                                              client_keys=keys or (), known_hosts=self._known_hosts,
                                              connect_timeout=self._connect_timeout_s, keepalive_interval=30)
                root = root_expression(self.pool.workdir_root)
                # a login shell that hangs (a stuck rc file) is an error here, not a hung run
                done = await asyncio.wait_for(conn.run(f"mkdir -p {root} && cd {root} && pwd -P", check=True),
                                              FIRST_COMMAND_TIMEOUT_S)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise BackendError(f"ssh pool {self.pool_name!r}: host key of {where} is not trusted ({exc}); "
                                   f"add it with `ssh-keyscan -p {host.address.port} {host.address.host} "
                                   f">> ~/.ssh/known_hosts`", backend=self.name) from exc
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                cause = str(exc) or (f"no answer in time (connect {self._connect_timeout_s:g} s, first command "
                                     f"{FIRST_COMMAND_TIMEOUT_S:g} s)" if isinstance(exc, TimeoutError)
                                     else type(exc).__name__)
                raise BackendError(f"ssh pool {self.pool_name!r}: cannot reach host {where}: {cause}",
                                   backend=self.name) from exc
            host.conn, host.root = conn, str(done.stdout).strip()
            host.ip = str(conn.get_extra_info("peername")[0])
            return conn

    async def _probe_all(self) -> list[tuple[float, float, dict[str, int]]]:
        results = await asyncio.gather(*(self._probe(h) for h in self.hosts), return_exceptions=True)
        return [r for r in results if isinstance(r, tuple)]

    async def _probe(self, host: PoolHost) -> tuple[float, float, dict[str, int]]:
        conn = await self._connect(host)
        cpus, memory_gb, gpus = parse_probe(str((await conn.run(PROBE_COMMAND)).stdout))
        return (self.pool.cpus or cpus, self.pool.memory_gb or memory_gb,
                dict(self.pool.accelerators) if self.pool.accelerators else gpus)

    # -- starting an attempt ------------------------------------------------------------------
    async def _start(self, launch: StageLaunch, hosts: list[PoolHost]) -> list[RemoteNode]:
        await asyncio.gather(*(self._connect(h) for h in hosts))
        nodes = [RemoteNode(rank, host, _node_dir(host.root, launch, rank)) for rank, host in enumerate(hosts)]
        ips = [n.host.ip for n in nodes]
        await asyncio.gather(*(self._prepare(launch, node, ips) for node in nodes))
        started = await asyncio.gather(*(self._spawn(node) for node in nodes), return_exceptions=True)
        failure = next((s for s in started if isinstance(s, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(stop_node(n) for n in nodes if n.process is not None), return_exceptions=True)
            if isinstance(failure, BackendError):
                raise failure
            raise BackendError(f"ssh pool {self.pool_name!r}: could not start stage {launch.stage!r}: {failure}",
                               stage=launch.stage, backend=self.name) from failure
        return nodes

    async def _prepare(self, launch: StageLaunch, node: RemoteNode, ips: list[str]) -> None:
        import asyncssh

        conn, q = node.host.conn, shlex.quote(node.node_dir)
        outputs = " ".join(shlex.quote(f"{node.node_dir}/outputs/{o}") for o in launch.outputs)
        try:
            await conn.run(f"rm -rf {q} && mkdir -p {q}/inputs {outputs}", check=True)
            mirror = f"{node.host.root}/workdirs/{_mirror_key(node.host, launch.workdir)}"
            async with node.host.sync_lock, conn.start_sftp_client() as sftp:
                await sync_tree(conn, sftp, launch.workdir, mirror, self._digests)
                await conn.run(f"cp -a {shlex.quote(mirror)} {q}/workdir", check=True)
                for name, local in launch.inputs.items():
                    await put_dir(sftp, local, f"{node.node_dir}/inputs/{name}")
                await _write(sftp, f"{node.node_dir}/node.env", env_file(self._node_env(launch, node, ips)), 0o600)
                await _write(sftp, f"{node.node_dir}/stage.sh", stage_script(node.node_dir, launch.setup))
                await _write(sftp, f"{node.node_dir}/{RUN_ENV_FILE}", run_env_script(node.node_dir))
                await _write(sftp, f"{node.node_dir}/run.sh", launch.run + "\n")
                if launch.setup:
                    await _write(sftp, f"{node.node_dir}/setup.sh", launch.setup + "\n")
                await _write(sftp, f"{node.node_dir}/driver.sh", driver_script(node.node_dir, node.token), 0o600)
        except (OSError, asyncssh.Error) as exc:
            raise BackendError(f"ssh pool {self.pool_name!r}: preparing stage {launch.stage!r} on host "
                               f"{node.host.address} failed: {exc}", stage=launch.stage, backend=self.name) from exc

    def _node_env(self, launch: StageLaunch, node: RemoteNode, ips: list[str]) -> dict[str, str]:
        declared = frozenset(launch.spec.envs)
        env = remote_env(launch.env, keep=declared)
        local_to_remote = {str(p): f"{node.node_dir}/inputs/{n}" for n, p in launch.inputs.items()}
        local_to_remote.update({str(p): f"{node.node_dir}/outputs/{n}" for n, p in launch.outputs.items()})
        for key, value in env.items():
            if key.startswith(("SKYFLOW_INPUT_", "SKYFLOW_OUTPUT_")) and value in local_to_remote:
                env[key] = local_to_remote[value]
        env.update({"SKYPILOT_NODE_RANK": str(node.rank), "SKYPILOT_NUM_NODES": str(len(ips)),
                    "SKYPILOT_NODE_IPS": "\n".join(ips), "SKYPILOT_HEAD_IP": ips[0], STAGE_TOKEN_VARIABLE: node.token})
        return env

    async def _spawn(self, node: RemoteNode) -> None:
        node.process = await node.host.conn.create_process(f"bash {shlex.quote(node.node_dir)}/driver.sh",
                                                           encoding=None)
        first = await asyncio.wait_for(node.process.stderr.readline(), START_TIMEOUT_S)
        text = first.decode("utf-8", "replace").strip()
        if not text.startswith(PGID_MARKER):
            raise BackendError(f"ssh pool {self.pool_name!r}: the stage did not start on host "
                               f"{node.host.address}: {text or 'no answer'}", backend=self.name)
        node.pgid = int(text[len(PGID_MARKER):])


class SshStageHandle:
    """A launched attempt on the pool: watches every node's driver, streams logs, copies outputs back."""

    def __init__(self, backend: SshBackend, launch: StageLaunch, nodes: list[RemoteNode], log: IO[bytes]) -> None:
        self.backend = backend
        self.launch = launch
        self.nodes = nodes
        self.log = log
        self.future: Any = None
        self._cancelled = threading.Event()
        self._stopping = threading.Event()

    @property
    def process_groups(self) -> list[int]:
        return []  # remote groups; the runner must never signal them as local process ids

    @property
    def remote(self) -> RemoteHandle:
        """The pool and each node's host, process group and token, for `abandon` after the runner died."""
        return {"pool": self.backend.pool_name,
                "groups": [[str(n.host.address), n.pgid, n.token] for n in self.nodes]}

    @property
    def remote_groups(self) -> dict[str, int]:
        """Host (as configured) -> process group id of the node running there."""
        return {f"{n.rank}:{n.host.address}": n.pgid for n in self.nodes}

    def wait(self) -> StageExit:
        deadline = time.monotonic() + self.launch.timeout_s if self.launch.timeout_s else None
        while True:
            try:
                exit_: StageExit = self.future.result(timeout=0.1)
                break
            except TimeoutError:
                if deadline is not None and time.monotonic() > deadline and not self._stopping.is_set():
                    self._stop()
                    exit_ = self.future.result()
                    return StageExit(-9, f"timed out after {self.launch.timeout_s:g} s", timed_out=True)
        if self._cancelled.is_set():
            return StageExit(exit_.exit_code or -15, "cancelled", cancelled=True)
        return exit_

    def cancel(self) -> None:
        self._cancelled.set()
        self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        self.backend._loop.run(_stop_all(self.nodes))

    async def supervise(self) -> StageExit:
        try:
            return await self._supervise()
        finally:
            self.log.close()
            self.backend._release([n.host for n in self.nodes])

    async def _supervise(self) -> StageExit:
        tasks = {asyncio.ensure_future(self._follow(node)): node for node in self.nodes}
        first_failure: StageExit | None = None
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                code, reason = task.result()
                if code != 0 and first_failure is None:  # one node failing fails the stage; stop the rest
                    first_failure = StageExit(code, reason)
                    await _stop_all([tasks[t] for t in pending])
        if first_failure is not None or self._stopping.is_set():
            return first_failure or StageExit(-15, "stopped")
        return await self._collect()

    async def _follow(self, node: RemoteNode) -> tuple[int, str]:
        prefix = f"(node {node.rank}) " if len(self.nodes) > 1 else ""
        await asyncio.gather(self._pump(node.process.stdout, prefix), self._pump(node.process.stderr, prefix))
        result = await node.process.wait()
        if result.exit_status is None or result.exit_status < 0:
            return 255, f"lost the connection to host {node.host.address} (node {node.rank})"
        code = int(result.exit_status)
        if code == 0:
            return 0, ""
        where = f"on host {node.host.address} (node {node.rank})"
        signum = await _killed_by(node, code)
        if signum is not None:  # killed from outside, as a local stage's process group can be: a negative code
            return -signum, f"killed by {_signal_name(signum)} {where}"
        return code, f"exit code {code} {where}"

    async def _pump(self, stream: Any, prefix: str) -> None:
        secrets = [s for s in self.launch.secret_values if s]
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = mask_secrets(raw.decode("utf-8", "replace"), secrets)
            self.log.write((prefix + line).encode())
            self.log.flush()
            if self.backend._on_line:
                self.backend._on_line(self.launch.stage, line.rstrip("\n"))

    async def _collect(self) -> StageExit:
        """Copy the head node's outputs into the runner's output directories, then clean the hosts."""
        import asyncssh

        head = self.nodes[0]
        try:
            async with head.host.conn.start_sftp_client() as sftp:
                for name, local in self.launch.outputs.items():
                    await get_dir_contents(sftp, f"{head.node_dir}/outputs/{name}", local)
        except (OSError, asyncssh.Error) as exc:
            return StageExit(1, f"could not copy outputs back from host {head.host.address}: {exc}")
        for node in self.nodes:
            with contextlib.suppress(OSError, asyncssh.Error):
                await node.host.conn.run(f"rm -rf {shlex.quote(node.node_dir)}")
        return StageExit(0)


async def stop_node(node: RemoteNode) -> None:
    """Stop the node's process group, then the processes carrying its token; closing the driver's
    stdin is the watcher's signal too."""
    import asyncssh

    if node.process is not None:
        with contextlib.suppress(OSError, asyncssh.Error):
            node.process.stdin.write_eof()
    if node.pgid or node.process is not None:
        with contextlib.suppress(OSError, asyncssh.Error):
            await node.host.conn.run(kill_command(node.pgid, node.token))


async def _killed_by(node: RemoteNode, code: int) -> int | None:
    """The signal that killed the node's stage shell, when its driver saw 128 + N and the shell did not
    record that status itself; None for an exit code, or when the host cannot be asked."""
    import asyncssh

    if killed_by(code, "") is None:
        return None
    try:
        recorded = await node.host.conn.run(f"cat {shlex.quote(f'{node.node_dir}/{EXIT_STATUS_FILE}')} 2>/dev/null")
    except (OSError, asyncssh.Error):
        return None
    return killed_by(code, str(recorded.stdout or ""))


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


async def _kill_groups(backend: SshBackend, targets: list[tuple[PoolHost, int, str | None]]) -> None:
    import asyncssh

    for host, pgid, token in targets:
        with contextlib.suppress(OSError, asyncssh.Error, BackendError, asyncio.TimeoutError):
            await backend._connect(host)
            await host.conn.run(kill_command(pgid, token))


def _recorded_nodes(groups: object, hosts: dict[str, PoolHost]) -> list[tuple[PoolHost, int, str | None]]:
    """(host, process group, token) of each node a recorded handle names on one of ``hosts``: entries
    are [host, pgid, token], or [host, pgid] in handles recorded before nodes had tokens."""
    if not isinstance(groups, list):
        return []
    nodes = []
    for entry in groups:
        if not isinstance(entry, list) or len(entry) not in (2, 3) or str(entry[0]) not in hosts:
            continue
        token = entry[2] if len(entry) == 3 and _is_token(entry[2]) else None
        nodes.append((hosts[str(entry[0])], int(str(entry[1])), token))
    return nodes


def _is_token(value: object) -> bool:
    """Whether ``value`` looks like a `new_stage_token` (an exact, non-empty word to look for)."""
    return isinstance(value, str) and value.isascii() and value.isalnum()


async def _stop_all(nodes: list[RemoteNode]) -> None:
    await asyncio.gather(*(stop_node(n) for n in nodes), return_exceptions=True)


async def _write(sftp: Any, path: str, text: str, mode: int = 0o644) -> None:
    import asyncssh

    async with sftp.open(path, "w", attrs=asyncssh.SFTPAttrs(permissions=mode)) as f:
        await f.write(text)


def _node_dir(root: str, launch: StageLaunch, rank: int) -> str:
    return f"{root}/runs/{launch.run_id}/{launch.stage}/attempt-{launch.attempt}/node-{rank}"


def _mirror_key(host: PoolHost, workdir: Path) -> str:
    import hashlib

    return hashlib.sha256(f"{host.address}|{workdir.resolve()}".encode()).hexdigest()[:16]


def from_context(context: BackendContext) -> SshBackends:
    return SshBackends(context)


class SshBackends:
    """Every configured pool, each its own SshBackend, opened when a stage is first placed on it."""

    name = "ssh"

    def __init__(self, context: BackendContext) -> None:
        import os

        self.context = context
        self.pools = dict(context.config.ssh_pools)
        known = os.environ.get("SKYFLOW_SSH_KNOWN_HOSTS")
        self.known_hosts: Any = known if known else ()
        self._open: dict[str, SshBackend] = {}

    def pool(self, name: str) -> SshBackend:
        if name not in self._open:
            if name not in self.pools:
                import difflib

                close = difflib.get_close_matches(name, list(self.pools), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise BackendError(f"no ssh pool {name!r} in the skyflow config (configured: "
                                   f"{', '.join(sorted(self.pools)) or 'none'}).{hint}", backend=f"ssh/{name}")
            self._open[name] = SshBackend(name, self.pools[name], on_line=self.context.on_line,
                                          known_hosts=self.known_hosts)
        return self._open[name]

    def capacity(self) -> Capacity:
        caps = [self.pool(n).capacity() for n in self.pools]
        gpus: dict[str, int] = {}
        for cap in caps:
            for name, count in cap.gpus.items():
                gpus[name] = gpus.get(name, 0) + count
        return Capacity(cpus=sum(c.cpus for c in caps), memory_gb=sum(c.memory_gb for c in caps), gpus=gpus,
                        max_parallel=max(1, sum(c.max_parallel for c in caps)))

    def launch(self, launch: StageLaunch) -> StageHandle:
        infra = launch.placement.infra
        kind, _, name = infra.partition("/")
        if kind != "ssh" or not name:
            raise BackendError(f"stage {launch.stage!r} is placed on {infra!r}, not on an ssh pool (ssh/NAME)",
                               stage=launch.stage, backend="ssh")
        return self.pool(name.split("/", 1)[0]).launch(launch)

    def abandon(self, leftover: Leftover) -> None:
        pool = (leftover.remote or {}).get("pool")
        if pool in self.pools:
            self.pool(str(pool)).abandon(leftover)
