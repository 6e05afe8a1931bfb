"""What runs on an SSH host: the per-node scripts, the environment file, and host strings."""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from skyflow.errors import BackendError
from skyflow.processes import STAGE_TOKEN_VARIABLE

KILL_GRACE_S = 5
PGID_MARKER = "skyflow-pgid "
# The stage's shell writes its exit status here when it exits by itself. A shell killed by a signal
# writes nothing (or, from a trap on its way out, not the status it dies with): that is how a stage
# killed from outside is told from one that exited with 128 + N.
EXIT_STATUS_FILE = "exit-status"
# The file bash sources before run.sh (BASH_ENV): the exit status trap, then the stage's own BASH_ENV.
RUN_ENV_FILE = "run-env.sh"
# Scans after the SIGKILLs, for processes a stage forked between a scan and the signal.
KILL_SCANS = 20
# The watcher's copy of the node's token: under another name, so that the scan does not find the watcher.
WATCHER_TOKEN_VARIABLE = "SKYFLOW_END_TOKEN"
# Names that describe the runner's own machine; the host has its own (the stage may still set them).
HOST_SPECIFIC = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "TMPDIR",
                           "TERM", "DISPLAY", "HOSTNAME", "MAIL", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH",
                           "LD_LIBRARY_PATH", "LANG", "LANGUAGE", "SKYFLOW_HOME", "_"})
HOST_SPECIFIC_PREFIXES = ("SSH_", "XDG_", "LC_", "CONDA_", "DBUS_")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HostAddress:
    """One pool entry: ``host`` or ``host:port`` (``[v6addr]:port`` for IPv6)."""

    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str, pool: str) -> HostAddress:
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        else:
            host, port = text, ""
        if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise BackendError(f"ssh pool {pool!r}: host {text!r} is not 'host' or 'host:port'; "
                               f"write e.g. 10.0.0.5 or gpu2.lab:2222", backend=f"ssh/{pool}")
        return cls(host, int(port) if port else 22)

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == 22 else f"{shown}:{self.port}"


def remote_env(env: Mapping[str, str], keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """The stage environment minus what belongs to the runner's machine (PATH, HOME, ...)."""
    out = {}
    for key, value in env.items():
        if not _NAME.match(key):
            continue
        if key not in keep and (key in HOST_SPECIFIC or key.startswith(HOST_SPECIFIC_PREFIXES)):
            continue
        out[key] = value
    return out


def env_file(env: Mapping[str, str]) -> str:
    """Shell assignments sourced under `set -a`; the file is removed as soon as it is read."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))


def stage_script(node_dir: str, setup: str | None) -> str:
    """setup, then run, each its own bash script, as the local backend and SkyPilot run them.

    The shell running run.sh is the one stage.sh started (``exec``); bash sources RUN_ENV_FILE
    into it first, so that it too records its exit status when it exits by itself."""
    q = shlex.quote(node_dir)
    lines = ["#!/usr/bin/env bash", exit_status_trap(node_dir),
             f"set -a; . {q}/node.env; set +a; rm -f {q}/node.env"]
    if setup:
        lines.append(f'bash {q}/setup.sh || {{ code=$?; echo "skyflow: setup failed with exit code $code"; '
                     'exit $code; }')
    lines.append(f'SKYFLOW_BASH_ENV="${{BASH_ENV-}}" BASH_ENV={q}/{RUN_ENV_FILE} exec bash {q}/run.sh')
    return "\n".join(lines) + "\n"


def exit_status_trap(node_dir: str) -> str:
    """Bash that writes the shell's exit status to EXIT_STATUS_FILE when the shell exits by itself."""
    status = shlex.quote(f"{node_dir}/{EXIT_STATUS_FILE}")
    return f"skyflow_exited() {{ echo \"$1\" >| {status}; }}\ntrap 'skyflow_exited $?' EXIT"


def run_env_script(node_dir: str) -> str:
    """RUN_ENV_FILE: the exit status trap, then the BASH_ENV the stage's environment set, if any."""
    return (f"{exit_status_trap(node_dir)}\n"
            'if [ -n "${SKYFLOW_BASH_ENV-}" ]; then BASH_ENV=$SKYFLOW_BASH_ENV; unset SKYFLOW_BASH_ENV; '
            '. "$BASH_ENV"; else unset BASH_ENV SKYFLOW_BASH_ENV; fi\n')


def killed_by(exit_status: int, recorded: str) -> int | None:
    """The signal that killed a stage's shell, from the status its driver saw and what the shell wrote
    to EXIT_STATUS_FILE (``recorded``); None when the shell exited with that status itself."""
    if not 128 < exit_status < 128 + signal.NSIG or recorded.strip() == str(exit_status):
        return None
    return exit_status - 128


def end_functions() -> str:
    """Bash functions that end a node's stage on its host.

    ``skyflow_end_group PGID`` SIGTERMs the process group and SIGKILLs it if it is still there
    after the grace period. ``skyflow_end_token TOKEN`` does the same for every process of the
    remote user whose environment (/proc/PID/environ) carries ``SKYFLOW_STAGE_TOKEN=TOKEN``,
    then scans again until none is left: children that left the group (`setsid`, daemons) end
    too. The shell that scans is never among them.
    """
    steps = KILL_GRACE_S * 10
    return f"""skyflow_end_group() {{
  kill -TERM -- "-$1" 2>/dev/null || return 0
  local i
  for i in $(seq {steps}); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null
  return 0
}}
skyflow_token_pids() {{
  local file pid
  for file in $(grep -lszxF "{STAGE_TOKEN_VARIABLE}=$1" /proc/[0-9]*/environ); do
    pid=${{file#/proc/}}
    pid=${{pid%/environ}}
    [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] || echo "$pid"
  done
}}
skyflow_end_token() {{
  local pids i
  pids=$(skyflow_token_pids "$1")
  [ -n "$pids" ] || return 0
  kill -TERM $pids 2>/dev/null
  for i in $(seq {steps}); do
    sleep 0.1
    pids=$(skyflow_token_pids "$1")
    [ -n "$pids" ] || return 0
  done
  for i in $(seq {KILL_SCANS}); do
    kill -KILL $pids 2>/dev/null
    sleep 0.05
    pids=$(skyflow_token_pids "$1")
    [ -n "$pids" ] || return 0
  done
  return 0
}}
"""


def watcher_script() -> str:
    """Waits for the driver's stdin to close, then ends the stage's group ($1) and every process
    carrying the token it finds in its environment under WATCHER_TOKEN_VARIABLE."""
    return f"""{end_functions()}cat >/dev/null
skyflow_end_group "$1"
skyflow_end_token "${WATCHER_TOKEN_VARIABLE}"
"""


def driver_script(node_dir: str, token: str) -> str:
    """Starts the stage in its own session, reports its process group, waits for it.

    The stage's processes carry ``token`` (set in node.env). When the stage's leader exits, the
    driver kills what is left of its group, then ends every process carrying the token. The
    runner holds this script's stdin open. When it closes — cancel, or the runner itself gone,
    which drops the connection — a watcher ends the stage's process group and then the processes
    carrying the token, so no orphan keeps a GPU busy. Stage output goes to stdout; the script's
    own messages to stderr.
    """
    q = shlex.quote(node_dir)
    return f"""#!/usr/bin/env bash
{end_functions()}token={shlex.quote(token)}
cd {q}/workdir || exit 97
setsid bash {q}/stage.sh </dev/null 2>&1 &
pgid=$!
echo "{PGID_MARKER}$pgid" >&2
{WATCHER_TOKEN_VARIABLE}=$token setsid bash -c {shlex.quote(watcher_script())} _ "$pgid" <&0 >/dev/null 2>&1 &
watcher=$!
wait "$pgid"
code=$?
kill -KILL -- "-$pgid" 2>/dev/null
skyflow_end_token "$token" >/dev/null 2>&1
kill -KILL -- "-$watcher" 2>/dev/null
exit $code
"""


def kill_command(pgid: int, token: str | None = None) -> str:
    """End a node's stage: its process group (SIGTERM, a grace period, SIGKILL), then every process
    carrying ``token``. A ``pgid`` of 0 (never reported) skips the group."""
    steps = [f"skyflow_end_group {pgid}"] if pgid > 0 else []
    if token:
        steps.append(f"skyflow_end_token {shlex.quote(token)}")
    script = end_functions() + "".join(f"{step}\n" for step in steps) + "exit 0\n"
    return f"bash -c {shlex.quote(script)}"


def root_expression(workdir_root: str) -> str:
    """The pool's workdir_root as a shell word, `~` meaning the remote user's home."""
    if workdir_root == "~":
        return '"$HOME"'
    if workdir_root.startswith("~/"):
        return '"$HOME"/' + shlex.quote(workdir_root[2:])
    return shlex.quote(workdir_root)


PROBE_COMMAND = ("nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; "
                 "nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true")


def parse_probe(text: str) -> tuple[float, float, dict[str, int]]:
    """(cpus, memory_gb, GPU counts) from PROBE_COMMAND's output."""
    from skyflow.backends.gpus import _short_name

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cpus = float(lines[0]) if lines and lines[0].isdigit() else 0.0
    memory_gb = round(int(lines[1]) / 2**20, 1) if len(lines) > 1 and lines[1].isdigit() else 0.0
    gpus: dict[str, int] = {}
    for name in lines[2:]:
        short = _short_name(name)
        gpus[short] = gpus.get(short, 0) + 1
    return cpus, memory_gb, gpus
