"""When a command starts a daemon for the next ones: SKYFLOW_DAEMON's modes, the commands a daemon
serves, a person at a terminal; never after an interrupt, never failing the command."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from skyflow.cli.daemon import client, launch
from skyflow.cli.daemon.address import daemon_disabled, daemon_mode, daemon_mode_mistake


@pytest.mark.parametrize(("value", "mode"), [
    (None, "auto"), ("", "auto"), ("auto", "auto"), ("on", "auto"), ("AUTO ", "auto"), ("1", "auto"),
    ("manual", "manual"), (" Manual", "manual"),
    ("off", "off"), ("OFF", "off"), ("0", "off"), ("no", "off"), ("false", "off"),
])
def test_the_modes_of_skyflow_daemon(value: str | None, mode: str) -> None:
    env = {} if value is None else {"SKYFLOW_DAEMON": value}
    assert daemon_mode(env) == mode
    assert daemon_disabled(env) == (mode == "off")
    assert daemon_mode_mistake(env) is None


@pytest.mark.parametrize(("value", "hint"), [("of", " (did you mean off?)"), ("Manaul", " (did you mean manual?)"),
                                             ("daemon", "")])
def test_a_value_no_mode_takes_is_named_and_means_off(value: str, hint: str) -> None:
    env = {"SKYFLOW_DAEMON": value}
    assert daemon_mode(env) == "off" and daemon_disabled(env)
    assert daemon_mode_mistake(env) == (f"skyflow: SKYFLOW_DAEMON={value.lower()!r} is not one of auto, manual, off"
                                        f"{hint}: running without the daemon until it is")


def test_the_entry_point_names_a_mistaken_mode_once_for_a_served_command_only(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYFLOW_DAEMON", "of")
    assert client.forward(["validate", "p.yaml"]) is None  # runs in its own process
    assert capsys.readouterr().err == ("skyflow: SKYFLOW_DAEMON='of' is not one of auto, manual, off (did you mean "
                                       "off?): running without the daemon until it is\n")
    assert client.forward(["run", "p.yaml"]) is None  # a command no daemon serves never reads the variable
    assert capsys.readouterr().err == ""


class _Launches:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, terminal: bool = True, fails: bool = False,
                 socket_state: str | None = None) -> None:
        self.calls: list[float] = []
        self.fails = fails
        monkeypatch.setattr(launch, "launch_daemon", self)
        monkeypatch.setattr(launch, "_isatty", lambda fd: terminal)
        monkeypatch.setattr(launch, "daemon_socket_state", lambda: socket_state)
        monkeypatch.setattr(sys, "platform", "linux")

    def __call__(self, idle_timeout_min: float) -> Any:
        self.calls.append(idle_timeout_min)
        if self.fails:
            raise PermissionError(13, "Permission denied")
        return _Process()


class _Process:
    pid = 4242


@pytest.mark.parametrize("argv", [["plan", "p.yaml"], ["validate", "p.yaml"], ["dag", "p.yaml", "--json"]])
def test_a_served_command_at_a_terminal_in_auto_mode_starts_one_and_says_so(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SKYFLOW_DAEMON", raising=False)
    launches = _Launches(monkeypatch)
    launch.start_for_next_commands(argv)
    assert launches.calls == [launch.DEFAULT_IDLE_TIMEOUT_MIN]
    err = capsys.readouterr().err
    assert "skyflow: a daemon (pid 4242) now keeps skyflow loaded for the next dag, plan, validate" in err
    assert "SKYFLOW_DAEMON=manual" in err


@pytest.mark.parametrize(("argv", "mode", "terminal", "platform"), [
    (["runs"], "auto", True, "linux"),
    ([], "auto", True, "linux"),
    (["plan", "p.yaml"], "manual", True, "linux"),
    (["plan", "p.yaml"], "off", True, "linux"),
    (["plan", "p.yaml"], "auto", False, "linux"),
    (["plan", "p.yaml"], "auto", True, "darwin"),
])
def test_no_daemon_is_started_otherwise(argv: list[str], mode: str, terminal: bool, platform: str,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYFLOW_DAEMON", mode)
    launches = _Launches(monkeypatch, terminal=terminal)
    monkeypatch.setattr(sys, "platform", platform)
    launch.start_for_next_commands(argv)
    assert launches.calls == [] and capsys.readouterr().err == ""


@pytest.mark.parametrize("state", ["loading", "listening"])
def test_none_is_started_while_one_holds_the_address(state: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYFLOW_DAEMON", "auto")
    launches = _Launches(monkeypatch, socket_state=state)
    launch.start_for_next_commands(["plan", "p.yaml"])
    assert launches.calls == [] and capsys.readouterr().err == ""


def test_a_daemon_that_cannot_start_leaves_the_command_as_it_was(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SKYFLOW_DAEMON", "auto")
    launches = _Launches(monkeypatch, fails=True)
    launch.start_for_next_commands(["plan", "p.yaml"])
    assert len(launches.calls) == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize(("ends", "starts"), [(None, True), (SystemExit(0), True), (SystemExit(2), True),
                                              (SystemExit(130), False), (KeyboardInterrupt(), False)])
def test_a_command_run_here_starts_one_after_it_ends_but_not_after_an_interrupt(
        ends: BaseException | None, starts: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyflow.cli.main

    order: list[str] = []

    def entry() -> None:
        order.append("command")
        if ends is not None:
            raise ends

    monkeypatch.setattr(skyflow.cli.main, "entry", entry)
    monkeypatch.setattr(launch, "start_for_next_commands", lambda argv: order.append(f"start {argv[0]}"))
    expected = type(ends) if ends is not None else None
    if expected is None:
        client._run_here(["plan", "p.yaml"])
    else:
        with pytest.raises(expected):
            client._run_here(["plan", "p.yaml"])
    assert order == (["command", "start plan"] if starts else ["command"])
