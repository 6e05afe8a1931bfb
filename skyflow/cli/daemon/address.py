"""Where a skyflow daemon listens and how its messages travel. The `skyflow` entry point imports this
before anything else, so it takes only modules built into the interpreter: the `socket` module's
set-up alone (6 ms) would be a sixth of a command that a daemon answers."""

from __future__ import annotations

import _socket
import marshal
import os
import sys
import zlib

TYPE_CHECKING = False  # without importing typing (see skyflow/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "ALREADY_SERVED_EXIT",
    "FORWARDED_COMMANDS",
    "MODE_VARIABLE",
    "PROTOCOL",
    "MessageReader",
    "daemon_address",
    "daemon_disabled",
    "daemon_identity",
    "daemon_mode",
    "daemon_mode_mistake",
    "peer_uid",
    "send_message",
]

# What a daemon runs: commands that read files and print, starting no process or thread of their own.
FORWARDED_COMMANDS = frozenset({"plan", "validate", "dag"})
# `SKYFLOW_DAEMON`: `auto` (unset or empty too): a command uses a running daemon, and one that ran without a
# daemon starts one for the next commands when a terminal is attached; `manual`: a running daemon is used,
# none is started; `off`: every command runs in its own process, even with a daemon up (as for a value
# that is none of these, which the client names on stderr).
MODE_VARIABLE = "SKYFLOW_DAEMON"
_MODES = {"": "auto", "auto": "auto", "on": "auto", "1": "auto", "yes": "auto", "true": "auto",
          "manual": "manual", "off": "off", "0": "off", "no": "off", "false": "off"}
PROTOCOL = 2  # 2: the client says which ending signals it ignores
ALREADY_SERVED_EXIT = 3  # a daemon's exit status when another one holds its address
_MAX_MESSAGE = 64 << 20


def daemon_identity(environ: Mapping[str, str] | None = None) -> list[str]:
    """What a daemon serves: this skyflow package (a checkout, an install, a copy on PYTHONPATH), this
    Python environment and this skyflow home (skyflow.home.skyflow_home, without importing pathlib)."""
    env = os.environ if environ is None else environ
    home = os.path.expanduser(env.get("SKYFLOW_HOME") or os.path.join(os.path.expanduser("~"), ".skyflow"))
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return [package, sys.prefix, os.path.normpath(home)]


def daemon_address(environ: Mapping[str, str] | None = None) -> str:
    """The daemon's socket, in Linux's abstract namespace (no file to leave behind), named after the
    user and the identity; the daemon checks the identity itself, so a clash of names only costs a
    command its shortcut."""
    identity = "\0".join(daemon_identity(environ)).encode()
    return f"\0skyflow-daemon-{os.getuid()}-{zlib.crc32(identity):08x}{zlib.adler32(identity):08x}"


def daemon_mode(environ: Mapping[str, str] | None = None) -> str:
    """`off`, `manual` or `auto`, from SKYFLOW_DAEMON (see MODE_VARIABLE); `off` for a value it does not
    know (daemon_mode_mistake says what is wrong with it)."""
    return _MODES.get(_mode_value(environ), "off")


def daemon_mode_mistake(environ: Mapping[str, str] | None = None) -> str | None:
    """A line for stderr when SKYFLOW_DAEMON holds a value none of the modes takes, else None."""
    value = _mode_value(environ)
    if value in _MODES:
        return None
    from difflib import get_close_matches

    near = get_close_matches(value, sorted(_MODES), n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return (f"skyflow: {MODE_VARIABLE}={value!r} is not one of auto, manual, off{hint}: "
            "running without the daemon until it is")


def _mode_value(environ: Mapping[str, str] | None) -> str:
    env = os.environ if environ is None else environ
    return env.get(MODE_VARIABLE, "").strip().lower()


def daemon_disabled(environ: Mapping[str, str] | None = None) -> bool:
    return daemon_mode(environ) == "off"


def peer_uid(sock: Any) -> int:
    """The user of the process at the other end (SO_PEERCRED: pid, uid, gid as C ints)."""
    credentials = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(credentials[4:8], sys.byteorder)


def send_message(sock: Any, message: Any, fds: list[int] | None = None) -> None:
    """One message (marshal: both ends are the same Python, of the same user); `fds` travel with its
    first byte (SCM_RIGHTS)."""
    payload = marshal.dumps(message)
    frame = len(payload).to_bytes(4, "big") + payload
    if fds:
        rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        frame = frame[sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)]):]
    sock.sendall(frame)


class MessageReader:
    """The messages coming in on a connection, in order."""

    def __init__(self, sock: Any, received: bytes = b"") -> None:
        self._sock = sock
        self._buffer = bytearray(received)

    def next(self) -> Any:
        """The next message; None once the other side has closed."""
        while True:
            if len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if size > _MAX_MESSAGE:
                    raise ValueError(f"a daemon message of {size} bytes, over the 64 MiB limit")
                if len(self._buffer) >= 4 + size:
                    payload = bytes(self._buffer[4:4 + size])
                    del self._buffer[:4 + size]
                    return marshal.loads(payload)
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
