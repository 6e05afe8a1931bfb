"""The daemon: loads what `plan`, `validate` and `dag` import once, then runs each command in a fork
of itself that takes on the client's standard streams (passed as file descriptors), working folder,
environment, umask and argv, so that a command costs its own work and not the imports."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import hashlib
import importlib
import io
import json
import os
import select
import signal
import socket
import sys
import sysconfig
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, NoReturn

from skyflow.cli.daemon.address import (
    ALREADY_SERVED_EXIT,
    PROTOCOL,
    MessageReader,
    daemon_address,
    daemon_identity,
    peer_uid,
    send_message,
)

__all__ = ["code_fingerprint", "main", "serve"]

_POLL_S = 1.0  # how often the loop reaps finished commands and looks at the idle time
_REQUEST_TIMEOUT_S = 10.0
_KEPT_CATALOGS = 4
_SAMPLE = """\
name: warm-up
stages:
  prepare:
    resources: {cpus: 1}
    run: 'true'
    outputs: {data: {size_gb: 1}}
  train:
    resources: {cpus: 2}
    run: 'true'
    inputs: {data: prepare.data}
"""


@dataclass
class _Fork:
    """A command running in a fork of the daemon, until the daemon reaps it."""

    argv: list[str]
    since: float
    catalog: str | None  # the catalog folder it reads, to keep loaded once it ends
    client: socket.socket | None  # the daemon's end of its client's connection, to see the client go

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


@dataclass
class _Daemon:
    listener: socket.socket
    identity: list[str]
    fingerprint: str
    idle_timeout_s: float  # 0: never
    modules: int = 0
    started: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    served: int = 0
    running: dict[int, _Fork] = field(default_factory=dict)  # by pid
    catalogs: list[str] = field(default_factory=list)  # the folders loaded here, for the forks
    stopping: bool = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skyflow.cli.daemon.server")
    parser.add_argument("--idle-timeout-s", type=float, default=3600.0)
    args = parser.parse_args(argv)
    sys.exit(serve(args.idle_timeout_s))


def serve(idle_timeout_s: float) -> int:
    # The address is this daemon's from here on, but a command that connects before it listens is
    # refused and runs in its own process, instead of waiting for the loading below.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(daemon_address())
    except OSError:
        _log("a daemon already serves this installation and home; this one exits")
        return ALREADY_SERVED_EXIT
    identity = daemon_identity()
    daemon = _Daemon(listener, identity, code_fingerprint(identity[0]), idle_timeout_s)
    daemon.modules = _preload()
    os.chdir("/")  # hold no user folder busy
    listener.listen(64)
    daemon.last_active = time.monotonic()  # idle from now: the loading is not idle time
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(daemon, "stopping", True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    listener.settimeout(_POLL_S)
    threads = _thread_count()
    if threads > 1:  # a fork copies one thread; a lock another one held stays held in the fork
        _log(f"{threads} threads after loading; forks may hang on a lock one of them held")
    _log(f"serving (pid {os.getpid()}, {daemon.modules} modules loaded)")
    while not daemon.stopping:
        _reap(daemon)
        if _idle_too_long(daemon):  # a status query is not a command: it does not keep the daemon up
            _log("idle timeout reached")
            break
        watched = {fork.client: pid for pid, fork in daemon.running.items() if fork.client is not None}
        ready, _, _ = select.select([listener, *watched], [], [], _POLL_S)
        for client in ready:
            if client is not listener:
                _end_if_client_went(daemon, watched[client])
        if listener not in ready:
            continue
        try:
            conn, _ = listener.accept()
        except (TimeoutError, BlockingIOError):
            continue
        with conn:
            _answer(daemon, conn)
    listener.close()
    _log("stopped")
    return 0


def code_fingerprint(package: str) -> str:
    """What the daemon loaded, as the file system has it now: every file of the skyflow package (path,
    size, modification time) and the folder of installed packages (an install or removal changes it).
    A daemon whose fingerprint changed no longer serves: its modules are not what a new process loads."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, package)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    paths = sysconfig.get_paths()
    for installed in {paths["purelib"], paths["platlib"]}:
        with contextlib.suppress(OSError):
            digest.update(f"{installed}\0{os.stat(installed).st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _preload() -> int:
    """Import what the served commands import, found by running them on a sample pipeline in a fork
    (whose caches and state are thrown away), then freeze what is loaded so that forks share it."""
    import skyflow.cli.main  # noqa: F401  (the command group itself)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _modules_the_commands_load():
            try:
                importlib.import_module(name)
            except Exception:  # a module that is not importable by name (an alias, a shim)
                continue
    _load_default_catalog()
    gc.collect()
    gc.freeze()
    return len(sys.modules)


def _load_default_catalog() -> None:
    """The catalog a plan without --catalog reads here (the shipped one, $SKYFLOW_CATALOG_DIR or SkyPilot's),
    kept for the forks: the catalog layer's cache is keyed by the files' size and time, so a fork whose
    environment names another catalog, or finds this one changed, reads its own."""
    _load_catalog(None)


def _load_catalog(folder: str | None) -> None:
    """Read a catalog into the catalog layer's own cache, where the forks will find it; one that cannot
    be read is left to the command that names it, which reports it."""
    from skyflow.catalog.sources import read_catalog
    from skyflow.errors import SkyflowError

    with contextlib.suppress(SkyflowError, OSError):
        read_catalog(folder)


def _modules_the_commands_load() -> list[str]:
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork's coverage is not collected
        os.close(reading)
        loaded: list[str] = []
        try:
            loaded = _run_sample_commands()
        finally:
            with os.fdopen(writing, "w") as out:
                out.write(json.dumps(loaded))
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return list(json.loads(text or "[]"))


def _run_sample_commands() -> list[str]:
    from skyflow.cli.main import main as run_command

    before = set(sys.modules)
    silent = os.open(os.devnull, os.O_RDWR)
    os.dup2(silent, 1)
    os.dup2(silent, 2)
    with tempfile.TemporaryDirectory(prefix="skyflow-daemon-") as tmp:
        os.environ["SKYFLOW_HOME"] = os.path.join(tmp, "home")
        pipeline = os.path.join(tmp, "pipeline.yaml")
        with open(pipeline, "w") as out:
            out.write(_SAMPLE)
        for argv in (["validate", pipeline], ["dag", pipeline], ["plan", pipeline], ["plan", pipeline, "--json"]):
            try:
                run_command(argv)
            except BaseException:  # a sample that fails still loaded its modules
                continue
    return [name for name in sys.modules if name not in before and not name.startswith("__main__")]


def _answer(daemon: _Daemon, conn: socket.socket) -> None:
    conn.settimeout(_REQUEST_TIMEOUT_S)
    _reap(daemon)
    fds: list[int] = []
    try:
        if peer_uid(conn) != os.getuid():
            return
        first, fds, _flags, _address = socket.recv_fds(conn, 1 << 16, 3)
        request = MessageReader(conn, first).next()
        if not isinstance(request, dict):
            return
        kind = request.get("kind")
        if kind == "status":
            send_message(conn, _status(daemon))
        elif kind == "stop":
            daemon.stopping = True
            send_message(conn, {"stopping": True, "pid": os.getpid()})
        elif kind == "command":
            _start_command(daemon, conn, request, fds)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        _log(f"a request failed: {type(exc).__name__}: {exc}")
    finally:
        for fd in fds:
            os.close(fd)


def _start_command(daemon: _Daemon, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    if request.get("protocol") != PROTOCOL or request.get("identity") != daemon.identity or len(fds) != 3:
        send_message(conn, {"stale": True})  # another skyflow, home or protocol: the client runs it itself
        return
    if code_fingerprint(daemon.identity[0]) != daemon.fingerprint:
        send_message(conn, {"stale": True})
        _log("skyflow's files or the installed packages changed since this daemon started; it exits")
        daemon.stopping = True
        return
    daemon.last_active = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork's coverage is not collected
        others = [fork.client for fork in daemon.running.values() if fork.client is not None]
        _run_command([daemon.listener, *others], conn, request, fds)
    daemon.served += 1
    daemon.running[pid] = _Fork(request["argv"], time.time(), _catalog_folder(request), conn.dup())


def _run_command(daemons_sockets: list[socket.socket], conn: socket.socket, request: dict[str, Any],
                 fds: list[int]) -> NoReturn:
    """In the fork: become the client's process, run the command, report its exit status. The daemon's
    own sockets (its listener, the other commands' connections) are closed first: a command holds
    nothing of another's."""
    code = 1
    try:
        for sock in daemons_sockets:
            sock.close()
        log = os.fdopen(os.dup(2), "w")  # the daemon's log, before the client's stderr takes fd 2
        try:
            _become_client(request, fds)
        except Exception as exc:  # nothing started: the client runs the command itself
            _log(f"could not take on the client's process: {type(exc).__name__}: {exc}", log)
            send_message(conn, {"stale": True})
            os._exit(0)
        send_message(conn, {"pid": os.getpid()})
        code = _run_cli(request["argv"])
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        send_message(conn, {"exit": code})
    finally:
        os._exit(code & 0xFF)


def _become_client(request: dict[str, Any], fds: list[int]) -> None:
    ignored = set(request["ignored_signals"])  # as the client's process started: a background job ignores Ctrl-C
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, signal.SIG_IGN if signum in ignored else default)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    fds.clear()
    sys.stdin, sys.stdout, sys.stderr = (_text_stream(fd, spec) for fd, spec in enumerate(request["streams"]))
    sys.argv = [request["argv0"], *request["argv"]]
    if sys.path:
        sys.path[0] = request["path0"]


def _text_stream(fd: int, spec: list[str] | None) -> Any:
    """A standard stream as Python opens it for a new process: stdout line-buffered on a terminal and
    block-buffered elsewhere, stderr line-buffered always, in the client's encoding."""
    encoding, errors = spec or ("utf-8", "strict")
    binary = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115 - the process's own stream
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors,
                            line_buffering=fd == 2 or (fd == 1 and os.isatty(fd)))


def _run_cli(argv: list[str]) -> int:
    from skyflow.cli.main import main as run_command

    try:
        run_command(argv)
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BaseException:  # as an uncaught exception ends a process: traceback, status 1
        traceback.print_exc()
        return 1
    return 0


def _exit_status(code: Any) -> int:
    """What Python makes of `sys.exit(code)` as a process's status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _status(daemon: _Daemon) -> dict[str, Any]:
    return {"pid": os.getpid(), "started": daemon.started, "served": daemon.served, "modules": daemon.modules,
            "idle_timeout_s": daemon.idle_timeout_s, "package": daemon.identity[0], "python": sys.executable,
            "home": daemon.identity[2], "catalogs": list(daemon.catalogs),
            "commands": [{"pid": pid, "argv": fork.argv, "since": fork.since}
                         for pid, fork in sorted(daemon.running.items(), key=lambda item: item[1].since)]}


def _reap(daemon: _Daemon) -> None:
    while daemon.running:
        try:
            pid, _status_code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            for fork in daemon.running.values():
                fork.close_client()
            daemon.running.clear()
            return
        if pid == 0:
            return
        if pid in daemon.running:
            fork = daemon.running.pop(pid)
            fork.close_client()
            _keep_catalog(daemon, fork.catalog)
        daemon.last_active = time.monotonic()


def _end_if_client_went(daemon: _Daemon, pid: int) -> None:
    """A client sends nothing after its request: its connection readable means it ended (killed, or
    gone after the exit status). A command whose client was killed has nobody to answer: its fork gets
    the SIGTERM that the client would have passed on. The fork is this process's child until reaped
    here, so its pid cannot name another process."""
    fork = daemon.running[pid]
    assert fork.client is not None, "only forks with a client are watched"
    try:
        went = not fork.client.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    except OSError:
        went = True
    if not went:
        return
    fork.close_client()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _catalog_folder(request: dict[str, Any]) -> str | None:
    """The catalog folder a command names: its --catalog, else its SKYFLOW_CATALOG_DIR (None: the default,
    which the daemon loaded at start)."""
    argv: list[str] = request["argv"]
    folder: str | None = request["env"].get("SKYFLOW_CATALOG_DIR")
    for i, arg in enumerate(argv):
        if arg == "--catalog" and i + 1 < len(argv):
            folder = argv[i + 1]
        elif arg.startswith("--catalog="):
            folder = arg.partition("=")[2]
    if not folder or folder == "default":
        return None
    return os.path.join(request["cwd"], os.path.expanduser(folder))


def _keep_catalog(daemon: _Daemon, folder: str | None) -> None:
    """Load, once the command that read it has ended (its parse is in the disk cache by then), a catalog
    folder that a command named, so that the next forks find it loaded; at most _KEPT_CATALOGS loads in
    a daemon's life. The catalog layer keys what it keeps by the files' size and time: a fork never gets
    a catalog that changed since."""
    if folder is None or folder in daemon.catalogs or len(daemon.catalogs) >= _KEPT_CATALOGS:
        return
    daemon.catalogs.append(folder)
    _load_catalog(folder)
    gc.freeze()  # shared with the forks, as what was loaded at start


def _idle_too_long(daemon: _Daemon) -> bool:
    if not daemon.idle_timeout_s or daemon.running:
        return False
    return time.monotonic() - daemon.last_active >= daemon.idle_timeout_s


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _log(text: str, to: Any = None) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} skyflow daemon: {text}", file=to or sys.stderr, flush=True)


if __name__ == "__main__":
    main()
