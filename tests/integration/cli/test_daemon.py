"""`skyflow daemon`: commands answered by a real daemon process give what a process of their own gives
(output, errors, exit status, signals), in the client's folder, environment and streams; a daemon whose
code changed stops serving; a command run at a terminal with none up starts one for the next. Each test
has its own SKYFLOW_HOME, hence its own daemon."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from skyflow.cli.daemon.address import ALREADY_SERVED_EXIT, daemon_address
from tests.integration.runner.test_cli_json import _schemas
from tests.processes_seen import WAIT_S, process_state, wait_for

REPO_ROOT = Path(__file__).resolve().parents[3]
RLHF = str(REPO_ROOT / "examples" / "rlhf" / "pipeline.yaml")
BAD = "name: bad\nstages:\n  a:\n    run: true\n    resources: {cpus: 8x}\n"
STATUS_SCHEMA = _schemas()["daemon-status"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the daemon is Linux only")


def skyflow(env: dict[str, str], *args: str, cwd: Path | str = REPO_ROOT,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyflow", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=WAIT_S, **kwargs)


def daemon_state(env: dict[str, str], cwd: Path | str = REPO_ROOT) -> dict[str, Any]:
    """`skyflow daemon status --json`, checked against its schema in docs/cli.md."""
    done = skyflow(env, "daemon", "status", "--json", cwd=cwd)
    state: dict[str, Any] = json.loads(done.stdout)
    jsonschema.validate(state, STATUS_SCHEMA)
    assert done.returncode == (0 if state["running"] else 1)
    return state


def daemon_log(env: dict[str, str]) -> str:
    return "".join(log.read_text() for log in (Path(env["SKYFLOW_HOME"]) / "daemon").glob("*.log"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # `manual`: commands use the test's daemon and start none (the tests of that set `auto` themselves)
    environ = {**os.environ, "SKYFLOW_DAEMON": "manual", "SKYFLOW_HOME": str(tmp_path / "home")}
    yield environ
    state = daemon_state(environ)
    if state["running"]:
        skyflow(environ, "daemon", "stop")
        with_pid = state["pid"]
        wait_for(lambda: process_state(with_pid) in ("", "Z"), "the daemon to exit")


@pytest.fixture
def daemon(env: dict[str, str]) -> dict[str, str]:
    started = skyflow(env, "daemon", "start", "--idle-timeout", "10")
    assert started.returncode == 0, started.stderr
    assert "skyflow daemon started" in started.stdout
    return env


def both_ways(env: dict[str, str], *args: str, **kwargs: Any) -> tuple[subprocess.CompletedProcess[str], ...]:
    served = skyflow(env, *args, **kwargs)
    alone = skyflow({**env, "SKYFLOW_DAEMON": "off"}, *args, **kwargs)
    return served, alone


def test_served_commands_print_and_exit_as_their_own_process_would(daemon: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    commands = [("plan", RLHF), ("plan", RLHF, "--json", "--all-clouds"), ("dag", RLHF, "--format", "mermaid"),
                ("validate", RLHF), ("validate", str(bad)), ("plan", str(tmp_path / "missing.yaml"))]
    for args in commands:
        served, alone = both_ways(daemon, *args)
        assert (served.returncode, served.stdout, served.stderr) == (alone.returncode, alone.stdout, alone.stderr)
    assert skyflow(daemon, "validate", str(bad)).returncode == 2
    assert "cpus must be a number like 8 or '8+', got '8x'" in skyflow(daemon, "validate", str(bad)).stderr
    assert daemon_state(daemon)["served"] == len(commands) + 2


def test_a_served_command_has_the_clients_folder_environment_and_streams(daemon: dict[str, str],
                                                                         tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(RLHF, work / "pipeline.yaml")
    with open(tmp_path / "out.txt", "w") as out:  # a file, not a pipe: the command writes to it itself
        done = subprocess.run([sys.executable, "-m", "skyflow", "dag", "pipeline.yaml"], env=daemon, cwd=work,
                              stdout=out, stderr=subprocess.PIPE, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert "sft" in (tmp_path / "out.txt").read_text()
    catalog = str(tmp_path / "no-such-catalog")
    served, alone = both_ways({**daemon, "SKYFLOW_CATALOG_DIR": catalog}, "plan", "pipeline.yaml", cwd=work)
    assert served.returncode == alone.returncode == 2
    assert catalog in served.stderr and served.stderr == alone.stderr
    assert daemon_state(daemon)["served"] == 2


def test_a_catalog_the_daemon_keeps_loaded_is_read_anew_once_changed(daemon: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "catalogs" / "quirks", catalog)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nstages:\n  a:\n    run: 'true'\n    resources: {cpus: 8, infra: aws}\n")
    plan = ("plan", str(pipeline), "--catalog", str(catalog), "--all-clouds", "--json")
    served, alone = both_ways(daemon, *plan)
    assert served.returncode == 0 and served.stdout == alone.stdout
    wait_for(lambda: daemon_state(daemon)["catalogs"] == [str(catalog)], "the daemon to load the catalog")
    vms = catalog / "aws" / "vms.csv"
    vms.write_text(vms.read_text().replace("m6i.2xlarge,,,8.0,32.0,,0.384,", "m6i.2xlarge,,,8.0,32.0,,0.05,"))
    cheaper, alone = both_ways(daemon, *plan)
    assert cheaper.returncode == 0 and cheaper.stdout == alone.stdout
    assert json.loads(cheaper.stdout)["total_usd"] < json.loads(served.stdout)["total_usd"]


def test_only_the_commands_a_daemon_serves_go_to_it(daemon: dict[str, str]) -> None:
    probe = "import sys; from skyflow.cli.daemon.client import forward; print(repr(forward(sys.argv[1:])))"

    def forwarded(*args: str, env: dict[str, str] = daemon) -> str:
        done = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
                              timeout=WAIT_S, cwd=REPO_ROOT)
        return done.stdout.strip().splitlines()[-1]

    assert forwarded("validate", RLHF) == "0"
    assert forwarded("runs") == "None"
    assert forwarded("--version") == "None"
    assert forwarded("validate", RLHF, env={**daemon, "SKYFLOW_DAEMON": "off"}) == "None"
    assert daemon_state(daemon)["served"] == 1


def _validate_waiting(fifo: Path, env: dict[str, str], ctrl_c: Any) -> tuple[subprocess.Popen[str], int]:
    """`skyflow validate FIFO` started with SIGINT as a terminal's foreground job has it (SIG_DFL) or as a
    background job of a non-interactive shell does (SIG_IGN), whatever the suite inherited, and in a process
    group of its own, as a shell's job is (the kernel discards Ctrl-Z in an orphaned process group, which
    the suite's own is when it runs under a detached shell); returned once the command has opened the
    pipeline, with the pipeline's writing end."""
    client = subprocess.Popen([sys.executable, "-m", "skyflow", "validate", str(fifo)], env=env, cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, ctrl_c))
    writer = wait_for(lambda: _open_writer(fifo), "the command to open the pipeline")
    assert writer is not None  # wait_for returns the first true value
    return client, writer


def test_an_interrupt_reaches_the_served_command(daemon: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipeline.yaml"
    os.mkfifo(fifo)  # the command waits in its read of the pipeline until interrupted
    results = []
    for env in (daemon, {**daemon, "SKYFLOW_DAEMON": "off"}):
        client, writer = _validate_waiting(fifo, env, signal.SIG_DFL)
        reader = daemon_state(daemon)["commands"][0]["pid"] if env["SKYFLOW_DAEMON"] != "off" else client.pid

        def in_its_read(reader: int = reader) -> bool:
            return "pipe_read" in _kernel_wait(reader)

        # Once in its read, not between opening the pipeline and reading it: Python takes a signal that
        # comes there only after the read returns, as it would in any process.
        wait_for(in_its_read, "the command to wait in its read")
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=WAIT_S)
        os.close(writer)
        results.append((client.returncode, out, err))
    assert results[0] == results[1]
    assert results[0][0] == 130 and "Aborted." in results[0][2]
    state = daemon_state(daemon)
    assert state["served"] == 1 and state["commands"] == []


def test_a_command_that_ignores_ctrl_c_ignores_it_in_the_daemon_too(daemon: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipeline.yaml"
    os.mkfifo(fifo)
    results = []
    for env in (daemon, {**daemon, "SKYFLOW_DAEMON": "off"}):
        client, writer = _validate_waiting(fifo, env, signal.SIG_IGN)
        served = env["SKYFLOW_DAEMON"] != "off"
        os.kill(daemon_state(daemon)["commands"][0]["pid"] if served else client.pid, signal.SIGINT)  # the reader
        os.write(writer, Path(RLHF).read_bytes())
        os.close(writer)
        out, err = client.communicate(timeout=WAIT_S)
        results.append((client.returncode, out, err))
    assert results[0] == results[1]
    assert results[0][0] == 0 and "rlhf" in results[0][1]


def _two_validates_waiting(env: dict[str, str], tmp_path: Path) -> tuple[list[subprocess.Popen[str]], list[int]]:
    """Two `skyflow validate` commands, each waiting in the read of a pipeline of its own (a FIFO), with
    the pipelines' writing ends."""
    clients, writers = [], []
    for i in range(2):
        fifo = tmp_path / f"pipeline{i}.yaml"
        os.mkfifo(fifo)
        client, writer = _validate_waiting(fifo, env, signal.SIG_DFL)
        clients.append(client)
        writers.append(writer)
    return clients, writers


def test_commands_run_side_by_side(daemon: dict[str, str], tmp_path: Path) -> None:
    clients, writers = _two_validates_waiting(daemon, tmp_path)
    assert sorted(len(c["argv"]) for c in daemon_state(daemon)["commands"]) == [2, 2]  # both at once
    for writer in writers:
        os.write(writer, Path(RLHF).read_bytes())
        os.close(writer)
    outputs = [client.communicate(timeout=WAIT_S) for client in clients]
    assert [client.returncode for client in clients] == [0, 0]
    assert all("rlhf" in out for out, _ in outputs)
    assert daemon_state(daemon)["served"] == 2


def _kernel_wait(pid: int) -> str:
    """Where in the kernel the process sleeps (/proc/PID/wchan: `anon_pipe_read` or `pipe_read` in a
    pipe's read), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _open_writer(fifo: Path) -> int | None:
    """A writing end of the FIFO once a reader has it open (before that, ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def test_a_daemon_stops_serving_when_skyflow_changes(env: dict[str, str], tmp_path: Path) -> None:
    copy = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "skyflow", copy / "skyflow", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**env, "PYTHONPATH": str(copy)}  # run from tmp_path: `-m` puts the working folder first
    assert skyflow(env, "daemon", "start", cwd=tmp_path).returncode == 0
    try:
        assert daemon_state(env, tmp_path)["package"] == str(copy / "skyflow")
        assert skyflow(env, "validate", RLHF, cwd=tmp_path).returncode == 0
        assert daemon_state(env, tmp_path)["served"] == 1
        changed = copy / "skyflow" / "planner" / "core.py"
        later = changed.stat().st_mtime + 10
        os.utime(changed, (later, later))
        done = skyflow(env, "validate", RLHF, cwd=tmp_path)  # the daemon declines; it runs in its own process
        assert done.returncode == 0 and "rlhf" in done.stdout
        wait_for(lambda: not daemon_state(env, tmp_path)["running"], "the daemon to stop")
        assert "changed since this daemon started" in daemon_log(env)
    finally:
        skyflow(env, "daemon", "stop", cwd=tmp_path)


def test_start_stop_status(env: dict[str, str]) -> None:
    assert daemon_state(env) == {"running": False}
    assert "no skyflow daemon is running" in skyflow(env, "daemon", "stop").stdout
    assert "skyflow daemon started" in skyflow(env, "daemon", "start").stdout
    first = daemon_state(env)
    assert first["running"] and first["served"] == 0 and first["home"] == env["SKYFLOW_HOME"]
    again = skyflow(env, "daemon", "start")
    assert f"already running (pid {first['pid']})" in again.stdout
    text = skyflow(env, "daemon", "status")
    assert text.returncode == 0 and f"pid {first['pid']}" in text.stdout
    assert f"stopped (pid {first['pid']})" in skyflow(env, "daemon", "stop").stdout
    assert daemon_state(env) == {"running": False}
    assert skyflow(env, "validate", RLHF).returncode == 0  # no daemon: in its own process


def test_a_home_that_cannot_hold_the_log_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = skyflow({**env, "SKYFLOW_HOME": str(tmp_path / "a-file" / "home")}, "daemon", "start")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot write the daemon's log" in done.stderr and "Set SKYFLOW_HOME" in done.stderr


def test_an_idle_daemon_exits_by_itself(env: dict[str, str]) -> None:
    assert skyflow(env, "daemon", "start", "--idle-timeout", "0.05").returncode == 0  # 3 s, from when it answers
    wait_for(lambda: not daemon_state(env)["running"], "the idle daemon to exit")
    assert "idle timeout reached" in daemon_log(env)


def on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The command as a person at a terminal runs it: standard input and error on a pseudo-terminal,
    the output piped (`skyflow plan | less`). Its status, output, and what reached the terminal."""
    terminal, side = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "skyflow", *args], env=env, cwd=REPO_ROOT, stdin=side,
                              stdout=subprocess.PIPE, stderr=side, text=True, timeout=WAIT_S)
    finally:
        os.close(side)
    shown = b""
    try:
        while select.select([terminal], [], [], 0)[0] and (chunk := os.read(terminal, 4096)):
            shown += chunk
    except OSError:  # EIO: every end of the terminal's other side is closed, and all was read
        pass
    finally:
        os.close(terminal)
    return done.returncode, done.stdout, shown.decode()


def test_a_command_at_a_terminal_starts_a_daemon_for_the_next_ones(env: dict[str, str]) -> None:
    auto = {**env, "SKYFLOW_DAEMON": "auto"}
    alone = skyflow({**env, "SKYFLOW_DAEMON": "off"}, "validate", RLHF)
    code, out, shown = on_a_terminal(auto, "validate", RLHF)
    assert (code, out) == (0, alone.stdout)  # the first ran in its own process, as before
    state = wait_for(lambda: (answer := daemon_state(auto))["running"] and answer, "the started daemon to answer")
    assert f"skyflow: a daemon (pid {state['pid']}) now keeps skyflow loaded" in shown
    assert state["served"] == 0 and state["idle_timeout_s"] == 3600
    code, out, shown = on_a_terminal(auto, "validate", RLHF)
    assert (code, out, shown) == (0, alone.stdout, "")
    assert daemon_state(auto)["served"] == 1


def test_no_daemon_is_started_by_scripts_in_manual_or_off_mode_or_by_other_commands(env: dict[str, str]) -> None:
    auto = {**env, "SKYFLOW_DAEMON": "auto"}
    assert skyflow(auto, "validate", RLHF, stdin=subprocess.DEVNULL).returncode == 0  # no terminal: a script
    assert on_a_terminal({**env, "SKYFLOW_DAEMON": "manual"}, "validate", RLHF)[0] == 0
    assert on_a_terminal({**env, "SKYFLOW_DAEMON": "off"}, "plan", RLHF)[0] == 0
    assert on_a_terminal(auto, "--version")[0] == 0
    # A daemon is launched before the command's process exits, and makes its log first.
    assert not (Path(env["SKYFLOW_HOME"]) / "daemon").exists()
    assert daemon_state(env) == {"running": False}


def _held_daemon(env: dict[str, str], gate: Path) -> subprocess.Popen[bytes]:
    """A daemon whose loading is held until the test makes the file ``gate``; returned once it has
    taken its address (bound, not listening: what a loading daemon looks like)."""
    held = ("import os, sys, time; import skyflow.cli.daemon.server as server; load = server._preload\n"
            "def preload():\n    while not os.path.exists(sys.argv[1]): time.sleep(0.02)\n    return load()\n"
            "server._preload = preload; server.main(['--idle-timeout-s', '600'])")
    daemon = subprocess.Popen([sys.executable, "-c", held, str(gate)], env=env, cwd=REPO_ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    name = "@" + daemon_address(env)[1:]  # as /proc/net/unix shows an abstract address
    wait_for(lambda: name in Path("/proc/net/unix").read_text(), "the daemon to take its address")
    return daemon


def _in_background(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "skyflow", *args], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_while_a_daemon_loads_commands_run_on_their_own_and_stop_waits_to_stop_it(env: dict[str, str],
                                                                                  tmp_path: Path) -> None:
    gate = tmp_path / "loaded"
    first = _held_daemon(env, gate)
    try:
        done = skyflow(env, "validate", RLHF)  # refused, not kept waiting for the load: runs on its own
        assert done.returncode == 0 and "rlhf" in done.stdout
        assert daemon_state(env) == {"running": False, "loading": True}
        assert on_a_terminal({**env, "SKYFLOW_DAEMON": "auto"}, "validate", RLHF)[0] == 0
        assert daemon_log(env) == ""  # it started no second daemon (a launched one logs there)
        assert "a skyflow daemon is loading" in skyflow(env, "daemon", "status").stdout
        second = subprocess.run([sys.executable, "-m", "skyflow.cli.daemon.server"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=WAIT_S)
        assert second.returncode == ALREADY_SERVED_EXIT and "already serves" in second.stderr
        stopping = _in_background(env, "daemon", "stop")  # it cannot hear yet: waits until it can
        gate.touch()
        out, err = stopping.communicate(timeout=WAIT_S)
        assert stopping.returncode == 0 and f"skyflow daemon stopped (pid {first.pid})" in out, err
        assert first.wait(timeout=WAIT_S) == 0
        assert daemon_state(env) == {"running": False}
    finally:
        gate.touch()
        first.kill()


def test_start_waits_for_a_daemon_that_is_loading_instead_of_starting_another(env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    gate = tmp_path / "loaded"
    first = _held_daemon(env, gate)
    try:
        starting = _in_background(env, "daemon", "start")
        gate.touch()
        out, err = starting.communicate(timeout=WAIT_S)
        assert starting.returncode == 0 and f"skyflow daemon started (pid {first.pid}," in out, err
        assert daemon_log(env) == ""  # no daemon of its own launched (launched ones log here)
    finally:
        gate.touch()
        skyflow(env, "daemon", "stop")
        first.wait(timeout=WAIT_S)


def test_a_daemon_loads_the_skyflow_that_started_it_not_one_in_the_folder(env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("skyflow")  # the installed command: no folder on its path
    decoy = tmp_path / "work"
    (decoy / "skyflow").mkdir(parents=True)
    (decoy / "skyflow" / "__init__.py").write_text("raise SystemExit('the decoy skyflow was imported')\n")
    started = subprocess.run([str(script), "daemon", "start"], env=env, cwd=decoy, capture_output=True,
                             text=True, timeout=WAIT_S)
    assert started.returncode == 0, started.stderr
    assert daemon_state(env)["package"] == str((REPO_ROOT / "skyflow").resolve())
    served = subprocess.run([str(script), "validate", RLHF], env=env, cwd=decoy, capture_output=True, text=True,
                            timeout=WAIT_S)
    assert served.returncode == 0 and "rlhf" in served.stdout
    assert daemon_state(env)["served"] == 1


def test_ctrl_z_stops_the_served_command_with_its_client_and_fg_sets_both_going(daemon: dict[str, str],
                                                                                tmp_path: Path) -> None:
    fifo = tmp_path / "pipeline.yaml"
    os.mkfifo(fifo)
    client, writer = _validate_waiting(fifo, daemon, signal.SIG_DFL)
    try:
        fork = daemon_state(daemon)["commands"][0]["pid"]
        client.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends the foreground job
        wait_for(lambda: process_state(client.pid) == "T" and process_state(fork) == "T", "both to stop")
        client.send_signal(signal.SIGCONT)  # what `fg` and `bg` send
        wait_for(lambda: process_state(client.pid) != "T" and process_state(fork) != "T",
                 "both to go on")
        os.write(writer, Path(RLHF).read_bytes())
    finally:
        os.close(writer)
    out, err = client.communicate(timeout=WAIT_S)
    assert client.returncode == 0 and "rlhf" in out, err


def test_a_served_command_whose_client_was_killed_is_ended(daemon: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipeline.yaml"
    os.mkfifo(fifo)
    client, writer = _validate_waiting(fifo, daemon, signal.SIG_DFL)
    try:
        fork = daemon_state(daemon)["commands"][0]["pid"]
        client.kill()  # SIGKILL: the client can pass nothing on
        client.communicate(timeout=WAIT_S)
        wait_for(lambda: daemon_state(daemon)["commands"] == [], "the daemon to end the command")
        assert process_state(fork) == ""
    finally:
        os.close(writer)
    assert skyflow(daemon, "validate", RLHF).returncode == 0  # the daemon serves on
    assert daemon_state(daemon)["served"] == 2


def test_a_command_whose_process_died_ends_while_another_command_runs_on(daemon: dict[str, str],
                                                                        tmp_path: Path) -> None:
    clients, writers = _two_validates_waiting(daemon, tmp_path)
    try:
        forks = sorted(daemon_state(daemon)["commands"], key=lambda command: command["since"])
        os.kill(forks[0]["pid"], signal.SIGKILL)  # the first command's process dies without a word
        # Its client hears so from the daemon, though the second command's process (forked later) runs on.
        out, err = clients[0].communicate(timeout=WAIT_S)
        assert clients[0].returncode == 1 and "ended without an exit status" in err
        assert clients[1].poll() is None
        os.write(writers[1], Path(RLHF).read_bytes())
    finally:
        for writer in writers:
            os.close(writer)
    out, err = clients[1].communicate(timeout=WAIT_S)
    assert clients[1].returncode == 0 and "rlhf" in out, err
