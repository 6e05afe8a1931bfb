"""`skyflow daemon start|stop|status`: a resident skyflow that runs `plan`, `validate` and `dag`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from skyflow.cli.daemon.address import (
    ALREADY_SERVED_EXIT,
    FORWARDED_COMMANDS,
    MessageReader,
    daemon_address,
    peer_uid,
    send_message,
)
from skyflow.cli.daemon.launch import DEFAULT_IDLE_TIMEOUT_MIN, daemon_log_path, daemon_socket_state, launch_daemon

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


@click.group()
def daemon() -> None:
    """Keep skyflow loaded, so that plan, validate and dag answer without loading it each time.

    While a daemon runs (one per user, Python environment, skyflow install and SKYFLOW_HOME), those
    commands run in a fork of it, with your terminal, folder, environment and umask; their output
    and exit status are what a new process would give. It stops by itself when skyflow's files or
    the installed packages change, and after --idle-timeout minutes without a command. One of those
    commands run at a terminal with no daemon up starts one for the next (SKYFLOW_DAEMON=auto, the
    default); SKYFLOW_DAEMON=manual starts none, SKYFLOW_DAEMON=off runs every command in its own
    process. Linux only.

    \b
    skyflow daemon start
    skyflow daemon status --json
    skyflow daemon stop
    """


@daemon.command()
@click.option("--idle-timeout", "idle_minutes", type=click.FloatRange(min=0), default=DEFAULT_IDLE_TIMEOUT_MIN,
              show_default=True, help="Minutes without a command before the daemon exits; 0: never.")
def start(idle_minutes: float) -> None:
    """Start the daemon in the background (nothing to do when one runs).

    \b
    skyflow daemon start
    skyflow daemon start --idle-timeout 0      # until `skyflow daemon stop`
    """
    _require_linux()
    running = query_daemon()
    if running is not None:
        click.echo(f"skyflow daemon already running (pid {running['pid']})")
        return
    log_path = daemon_log_path()
    process = None
    if daemon_socket_state() != "loading":  # else one a command started is loading: wait for it
        try:
            process = launch_daemon(idle_minutes)
        except OSError as exc:
            raise click.ClickException(f"cannot write the daemon's log {log_path}: {exc.strerror or exc}. "
                                       "Set SKYFLOW_HOME to a folder you can write.") from exc
    status = _wait_for_daemon(process)
    if status is None:
        raise click.ClickException(f"the daemon did not start; its log, {log_path}, ends with:\n"
                                   f"{_tail(log_path)}")
    click.echo(f"skyflow daemon started (pid {status['pid']}, {status['modules']} modules loaded): "
               f"{', '.join(sorted(FORWARDED_COMMANDS))} run in it. Log: {log_path}")


def _wait_for_daemon(process: subprocess.Popen[bytes] | None) -> dict[str, Any] | None:
    """The state of the daemon once it answers; None when ``process`` (the one launched, if any) ended
    first, or none answered in time. One that found another daemon at the address exits, and that one
    answers once loaded."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        status = query_daemon()
        if status is not None:
            return status
        if process is not None and process.poll() not in (None, ALREADY_SERVED_EXIT):
            return None
        time.sleep(0.05)
    return None


@daemon.command()
def stop() -> None:
    """Stop the daemon; the commands it is running finish on their own.

    \b
    skyflow daemon stop
    """
    _require_linux()
    if daemon_socket_state() == "loading":  # it cannot hear yet: stopped once it answers
        _wait_for_daemon(None)
    answer = _ask({"kind": "stop"})
    if answer is None:
        click.echo("no skyflow daemon is running")
        return
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while query_daemon() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    click.echo(f"skyflow daemon stopped (pid {answer['pid']})")


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's state as JSON (schema: docs/cli.md).")
def status(as_json: bool) -> None:
    """Whether a daemon runs, since when, how many commands it ran and what it runs now; exit 1 when none.

    \b
    skyflow daemon status
    skyflow daemon status --json | jq .served
    """
    _require_linux()
    state = query_daemon()
    loading = state is None and daemon_socket_state() == "loading"
    if as_json:
        click.echo(json.dumps({"running": state is not None, **({"loading": True} if loading else {}),
                               **(state or {})}))
    elif loading:
        click.echo("a skyflow daemon is loading; it answers in a moment")
    elif state is None:
        click.echo("no skyflow daemon is running; `skyflow daemon start` starts one")
    else:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state["started"]))
        idle = f"{state['idle_timeout_s'] / 60:g} min" if state["idle_timeout_s"] else "never"
        click.echo(f"skyflow daemon running: pid {state['pid']}, since {started}, {state['served']} commands "
                   f"served, idle timeout {idle}\n  skyflow {state['package']}\n  python {state['python']}")
        for command in state["commands"]:
            click.echo(f"  running (pid {command['pid']}): skyflow {' '.join(command['argv'])}")
    if state is None:
        sys.exit(1)


def query_daemon() -> dict[str, Any] | None:
    """The running daemon's state, or None when none answers."""
    return _ask({"kind": "status"})


def _ask(request: dict[str, Any]) -> dict[str, Any] | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_STOP_TIMEOUT_S)
    with sock:
        try:
            sock.connect(daemon_address())
            if peer_uid(sock) != os.getuid():
                return None
            send_message(sock, request)
            answer = MessageReader(sock).next()
        except (OSError, ValueError, EOFError, TypeError):
            return None
    return answer if isinstance(answer, dict) else None


def _require_linux() -> None:
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        raise click.ClickException(f"the skyflow daemon runs on Linux only (this is {sys.platform}); "
                                   "commands run in their own process here")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


__all__ = ["daemon", "query_daemon"]
