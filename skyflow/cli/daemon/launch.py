"""Starting a daemon in the background: by `skyflow daemon start`, and by a served command that ran
without one (`SKYFLOW_DAEMON=auto`, the default, with a terminal attached)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skyflow.cli.daemon.address import FORWARDED_COMMANDS, daemon_address, daemon_identity, daemon_mode

__all__ = ["DEFAULT_IDLE_TIMEOUT_MIN", "daemon_log_path", "daemon_socket_state", "launch_daemon",
           "start_for_next_commands"]

DEFAULT_IDLE_TIMEOUT_MIN = 60.0
_THREAD_POOL_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The daemon imports the skyflow that launched it, not one in the folder a command ran in (`python -m`
# would look there first): the folder above this package comes first on its path, unless the path has
# it already (an install, PYTHONPATH), where it stays in its place.
_SERVER = ("import os, sys; here = sys.argv.pop(1); "
           "sys.path[0:1] = [] if here in map(os.path.realpath, sys.path[1:]) else [here]; "
           "from skyflow.cli.daemon.server import main; main(sys.argv[1:])")


def launch_daemon(idle_timeout_min: float) -> subprocess.Popen[bytes]:
    """A daemon process, detached (its own session; no stream or descriptor of this process, so that
    nobody waiting for this process's output waits for the daemon), logging to daemon_log_path().
    It answers once loaded; one that finds another daemon at its address exits ALREADY_SERVED_EXIT.
    Raises OSError when the log cannot be written."""
    log_path = daemon_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_path, "ab") as log:  # the daemon holds its own copy
        return subprocess.Popen([sys.executable, "-c", _SERVER, _package_parent(), "--idle-timeout-s",
                                 str(idle_timeout_min * 60)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                                env=_server_environment())


def start_for_next_commands(argv: list[str]) -> None:
    """After a command a daemon could have served ran in this process: start one for the commands that
    follow, where SKYFLOW_DAEMON allows (`auto`) and a person is at a terminal; scripts, cron and CI
    start one with `skyflow daemon start` when they want one. Says so on a terminal; never fails the
    command (a daemon that cannot start leaves the next commands to run as this one did)."""
    if (not argv or argv[0] not in FORWARDED_COMMANDS or daemon_mode() != "auto"
            or not sys.platform.startswith("linux") or not _terminal_attached()):
        return
    if daemon_socket_state() is not None:  # one is loading, or declined this command and serves on
        return
    try:
        process = launch_daemon(DEFAULT_IDLE_TIMEOUT_MIN)
    except OSError:
        return
    if _isatty(2):
        print(f"skyflow: a daemon (pid {process.pid}) now keeps skyflow loaded for the next "
              f"{', '.join(sorted(FORWARDED_COMMANDS))}; it stops after {DEFAULT_IDLE_TIMEOUT_MIN:g} idle "
              "minutes (`skyflow daemon stop`; SKYFLOW_DAEMON=manual starts none)", file=sys.stderr)


def daemon_socket_state() -> str | None:
    """"listening" (a daemon serves), "loading" (one holds the address and does not listen yet), or None
    (none): Linux lists each socket in /proc/net/unix, abstract names with "@", flag 0x10000 on a
    listening one."""
    name = "@" + daemon_address()[1:]
    try:
        with open("/proc/net/unix") as table:
            rows = [line.split() for line in table.readlines()[1:]]
    except OSError:
        return None
    for row in rows:
        if len(row) >= 8 and row[7] == name:
            return "listening" if int(row[3], 16) & 0x10000 else "loading"
    return None


def daemon_log_path() -> Path:
    from skyflow.home import skyflow_home

    key = daemon_address().rsplit("-", 1)[-1]  # one log per daemon
    return skyflow_home() / "daemon" / f"{key}.log"


def _package_parent() -> str:
    return os.path.dirname(daemon_identity()[0])  # the folder above the skyflow package this is part of


def _server_environment() -> dict[str, str]:
    """The daemon's own environment: one thread, so that it forks safely. BLAS libraries start their
    thread pools at import unless told otherwise; each command gets its client's environment anyway."""
    return {**os.environ, **{name: "1" for name in _THREAD_POOL_VARIABLES}}


def _terminal_attached() -> bool:
    return any(_isatty(fd) for fd in (0, 1, 2))


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
