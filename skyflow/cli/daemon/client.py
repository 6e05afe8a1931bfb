"""The `skyflow` entry point: a command that a running daemon serves goes to it, with this process's
standard streams, working folder, environment, umask and argv, and this process waits for its exit
status; anything else (no daemon, another command, `SKYFLOW_DAEMON=off`) runs here as always, and a
served command that ran here with no daemon up may start one for the next (launch.py)."""

from __future__ import annotations

import _socket
import contextlib
import os
import sys

from skyflow.cli.daemon.address import (
    FORWARDED_COMMANDS,
    PROTOCOL,
    MessageReader,
    daemon_address,
    daemon_disabled,
    daemon_identity,
    daemon_mode_mistake,
    peer_uid,
    send_message,
)

TYPE_CHECKING = False  # without importing typing (see skyflow/__init__.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["forward", "main"]


def main() -> None:
    try:
        code = forward(sys.argv[1:])
    except KeyboardInterrupt:
        from skyflow.errors import INTERRUPTED_EXIT

        print("Interrupted.", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    if code is None:
        _run_here(sys.argv[1:])
        return
    sys.exit(code)


def _run_here(argv: list[str]) -> None:
    """The command in this process; then, where it was one a daemon serves, a daemon for the next ones
    (launch.start_for_next_commands decides). Not after an interrupt (Ctrl-C: status 130)."""
    from skyflow.cli.main import entry
    from skyflow.errors import INTERRUPTED_EXIT

    try:
        entry()
    except SystemExit as exc:
        if exc.code != INTERRUPTED_EXIT:
            _start_for_next_commands(argv)
        raise
    _start_for_next_commands(argv)


def _start_for_next_commands(argv: list[str]) -> None:
    if argv and argv[0] in FORWARDED_COMMANDS:  # no import for the others
        from skyflow.cli.daemon.launch import start_for_next_commands

        start_for_next_commands(argv)


def forward(argv: list[str]) -> int | None:
    """The command's exit status from the daemon, or None where it is to run in this process: no
    daemon of this user listens, the command is not one a daemon runs, or the daemon could not start it."""
    if not argv or argv[0] not in FORWARDED_COMMANDS:
        return None
    mistake = daemon_mode_mistake()
    if mistake is not None:
        print(mistake, file=sys.stderr)
    if daemon_disabled() or not sys.platform.startswith("linux"):
        return None
    signals = _SignalRelay()  # from before the request: a Ctrl-C as the fork starts is not lost
    try:
        with contextlib.closing(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)) as sock:
            try:
                sock.connect(daemon_address())
                if peer_uid(sock) != os.getuid():  # someone else holds the name: tell them nothing
                    return None
                send_message(sock, _request(argv, signals), fds=[0, 1, 2])
            except OSError:  # nobody listens, or a standard stream is closed: nothing was started
                return None
            return _wait(MessageReader(sock), signals)
    finally:
        signals.restore()


def _request(argv: list[str], signals: _SignalRelay) -> dict[str, Any]:
    umask = os.umask(0o022)
    os.umask(umask)
    return {"kind": "command", "protocol": PROTOCOL, "identity": daemon_identity(), "argv": argv,
            "argv0": sys.argv[0], "path0": sys.path[0] if sys.path else "", "cwd": os.getcwd(),
            "env": dict(os.environ), "umask": umask, "ignored_signals": signals.ignored,
            "streams": [_stream(sys.stdin), _stream(sys.stdout), _stream(sys.stderr)]}


def _stream(stream: Any) -> tuple[str, str] | None:
    """What the command is to read and write this standard stream with (encoding, errors)."""
    return (stream.encoding, stream.errors) if stream is not None else None


def _wait(messages: MessageReader, signals: _SignalRelay) -> int | None:
    try:
        while (message := messages.next()) is not None:
            if message.get("stale"):
                return None
            if "pid" in message:
                signals.started(int(message["pid"]))
            if "exit" in message:
                return int(message["exit"])
    except (OSError, ValueError, EOFError, TypeError, AttributeError):  # the daemon went, or spoke nonsense
        pass
    if signals.pid is None:
        return None
    print("error: the skyflow daemon's process for this command ended without an exit status; "
          "run it again with SKYFLOW_DAEMON=off, and see `skyflow daemon status`", file=sys.stderr)
    return 1


class _SignalRelay:
    """Ctrl-C and the other ending signals that this process does not ignore, passed on to the daemon's
    fork once it has said its pid, and kept until then. Restored at the end; one that came while nothing
    had started is raised here again, so that this process ends as it would have (KeyboardInterrupt for
    Ctrl-C) instead of running the command itself. Ctrl-Z stops the fork with this process, and `fg` or
    `bg` sets both going again."""

    def __init__(self) -> None:
        import signal

        self.pid: int | None = None
        self._pending: list[int] = []
        ending = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
        # Those this process ignores (a background job's Ctrl-C) the fork ignores too, and none is relayed.
        self.ignored = [int(signum) for signum in ending if signal.getsignal(signum) == signal.SIG_IGN]
        self._previous = {signum: signal.signal(signum, self._handle) for signum in ending
                          if signum not in self.ignored}
        if signal.getsignal(signal.SIGTSTP) == signal.SIG_DFL:
            self._previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._suspend)

    def started(self, pid: int) -> None:
        self.pid = pid
        while self._pending:
            self._send(self._pending.pop(0))

    def restore(self) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.pid is None and self._pending:
            signal.raise_signal(self._pending[0])

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pid is None:
            self._pending.append(signum)
        else:
            self._send(signum)

    def _suspend(self, signum: int, frame: Any) -> None:
        import signal

        self._send(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)  # delivered before kill() returns: stopped here until SIGCONT
        finally:
            signal.signal(signal.SIGTSTP, self._suspend)
        self._send(signal.SIGCONT)

    def _send(self, signum: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
