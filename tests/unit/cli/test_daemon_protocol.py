"""The daemon's pieces that need no daemon: its identity, its messages and file descriptors on a
socket pair, the fingerprint that tells it its code changed, and exit statuses as Python gives them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow.cli.daemon.address import MessageReader, daemon_address, daemon_identity, peer_uid, send_message
from skyflow.cli.daemon.client import _SignalRelay, _wait
from skyflow.cli.daemon.server import _exit_status, code_fingerprint
from skyflow.home import skyflow_home


@pytest.mark.parametrize("home", [None, "/srv/skyflow", "/srv//skyflow/", "~/elsewhere", "~"])
def test_the_identity_names_the_home_that_skyflow_home_names(home: str | None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")  # `~` expands from the process's HOME
    env = {} if home is None else {"SKYFLOW_HOME": home}
    assert daemon_identity(env)[2] == os.path.normpath(str(skyflow_home(env)))


def test_each_home_has_its_own_address() -> None:
    first, second = daemon_address({"SKYFLOW_HOME": "/a"}), daemon_address({"SKYFLOW_HOME": "/b"})
    assert first != second and first.startswith(f"\0skyflow-daemon-{os.getuid()}-")
    assert daemon_address({"SKYFLOW_HOME": "/a"}) == first


def test_messages_arrive_whole_and_in_order_however_the_bytes_are_cut() -> None:
    left, right = socket.socketpair()
    with left, right:
        send_message(left, {"pid": 12})
        send_message(left, {"exit": 3, "text": "é" * 70_000})
        data = b""
        left.shutdown(socket.SHUT_WR)
        while chunk := right.recv(7):
            data += chunk
    for cut in (1, 5, 4 + 10, len(data) - 1):
        pieces = _Pieces([data[:cut], data[cut:]])
        reader = MessageReader(pieces)
        assert reader.next() == {"pid": 12}
        assert reader.next() == {"exit": 3, "text": "é" * 70_000}
        assert reader.next() is None
    assert MessageReader(_Pieces([data[:-1]])).next() == {"pid": 12}
    truncated = MessageReader(_Pieces([data[:-1]]))
    truncated.next()
    assert truncated.next() is None  # the other side closed mid-message: no message


def test_an_oversized_message_is_refused() -> None:
    with pytest.raises(ValueError, match="over the 64 MiB limit"):
        MessageReader(_Pieces([(1 << 30).to_bytes(4, "big")])).next()


def test_file_descriptors_travel_with_a_message_and_the_peer_is_this_user(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right, open(target, "w") as out:
        send_message(left, {"kind": "command"}, fds=[out.fileno()])
        first, fds, _flags, _address = socket.recv_fds(right, 1 << 16, 3)
        assert MessageReader(right, first).next() == {"kind": "command"}
        assert len(fds) == 1
        os.write(fds[0], b"written through the passed descriptor")
        os.close(fds[0])
        assert peer_uid(right) == os.getuid()
    assert target.read_text() == "written through the passed descriptor"


def test_the_fingerprint_changes_with_the_code_and_not_with_bytecode(tmp_path: Path) -> None:
    package = tmp_path / "skyflow"
    (package / "__pycache__").mkdir(parents=True)
    module = package / "core.py"
    module.write_text("x = 1\n")
    before = code_fingerprint(str(package))
    (package / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"bytecode")
    assert code_fingerprint(str(package)) == before
    os.utime(module, (module.stat().st_atime, module.stat().st_mtime + 5))
    touched = code_fingerprint(str(package))
    assert touched != before
    (package / "new.py").write_text("")
    assert code_fingerprint(str(package)) not in (before, touched)


def test_exit_statuses_are_what_python_makes_of_sys_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_status(None) == 0
    assert _exit_status(3) == 3
    assert _exit_status("no such thing") == 1
    assert capsys.readouterr().err == "no such thing\n"


class _Pieces:
    """A socket's receiving side that hands over the given pieces, then end of stream."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = [p for p in pieces if p]

    def recv(self, size: int) -> bytes:
        if not self._pieces:
            return b""
        piece = self._pieces[0][:size]
        self._pieces[0] = self._pieces[0][size:]
        if not self._pieces[0]:
            self._pieces.pop(0)
        return piece


def _answers(*messages: object, tail: bytes = b"") -> MessageReader:
    left, right = socket.socketpair()
    with left:
        for message in messages:
            send_message(left, message)
        left.sendall(tail)
    return MessageReader(_Pieces([right.recv(1 << 20)]))


def _relay_wait(reader: MessageReader) -> int | None:
    signals = _SignalRelay()
    try:
        return _wait(reader, signals)
    finally:
        signals.restore()


def test_the_client_takes_the_status_the_daemon_reports() -> None:
    assert _relay_wait(_answers({"pid": os.getpid()}, {"exit": 4})) == 4


def test_the_client_runs_the_command_itself_when_the_daemon_declines_or_goes_before_starting_it() -> None:
    assert _relay_wait(_answers({"stale": True})) is None
    assert _relay_wait(_answers()) is None
    assert _relay_wait(_answers(tail=b"\x00\x00\x00\x05nonsense")) is None
    assert _relay_wait(_answers(["not", "a", "mapping"])) is None


def test_a_command_whose_fork_died_ends_with_status_1_and_says_how_to_go_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _relay_wait(_answers({"pid": os.getpid()})) == 1  # started, then nothing: never run it twice
    assert "SKYFLOW_DAEMON=off" in capsys.readouterr().err


@pytest.fixture
def ending_signals() -> Iterator[None]:
    """The ending signals as a process at a terminal has them, whatever the suite inherited (a background
    job of a non-interactive shell ignores SIGINT and SIGQUIT); put back after."""
    import signal

    ending = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    saved = {signum: signal.getsignal(signum) for signum in ending}
    for signum in ending:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_before_the_fork_said_its_pid_reaches_it_once_it_has(ending_signals: None) -> None:
    import signal

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    signals = _SignalRelay()
    try:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # kept: no pid yet, this process goes on
        signals.started(child.pid)
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        signals.restore()
        child.kill()


def test_a_ctrl_c_while_nothing_started_ends_this_process_as_an_interrupt(ending_signals: None) -> None:
    import signal

    signals = _SignalRelay()
    # To this thread: a signal to the process may land on another of the suite's threads and reach its
    # Python handler only later, once the restore has put default_int_handler back: an interrupt that
    # escapes from wherever the main thread then is.
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        signals.restore()


def test_an_ignored_signal_is_neither_relayed_nor_taken_over(ending_signals: None) -> None:
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signals = _SignalRelay()
    try:
        assert signals.ignored == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) != signal.default_int_handler  # relayed
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
