"""What runs on an SSH host: the per-node scripts, the environment file, and host strings."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from skyflow.errors import BackendError

KILL_GRACE_S = 5
PGID_MARKER = "skyflow-pgid "
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
    """setup, then run, each its own bash script, as the local backend and SkyPilot run them."""
    q = shlex.quote(node_dir)
    lines = ["#!/usr/bin/env bash", f"set -a; . {q}/node.env; set +a; rm -f {q}/node.env"]
    if setup:
        lines.append(f'bash {q}/setup.sh || {{ code=$?; echo "skyflow: setup failed with exit code $code"; '
                     'exit $code; }')
    lines.append(f"exec bash {q}/run.sh")
    return "\n".join(lines) + "\n"


def driver_script(node_dir: str) -> str:
    """Starts the stage in its own session, reports its process group, waits for it.

    The runner holds this script's stdin open. When it closes — cancel, or the runner itself gone,
    which drops the connection — a watcher stops the stage's process group, so no orphan keeps a
    GPU busy. Stage output goes to stdout; the script's own messages to stderr.
    """
    q = shlex.quote(node_dir)
    return f"""#!/usr/bin/env bash
cd {q}/workdir || exit 97
setsid bash {q}/stage.sh </dev/null 2>&1 &
pgid=$!
echo "{PGID_MARKER}$pgid" >&2
setsid bash -c 'cat >/dev/null; kill -TERM -- -$1 2>/dev/null; sleep {KILL_GRACE_S}; kill -KILL -- -$1 2>/dev/null' \\
  _ "$pgid" <&0 >/dev/null 2>&1 &
watcher=$!
wait "$pgid"
code=$?
kill -KILL -- "-$pgid" 2>/dev/null
kill -KILL -- "-$watcher" 2>/dev/null
exit $code
"""


def kill_command(pgid: int) -> str:
    """SIGTERM the group, give it a grace period, then SIGKILL what is left."""
    steps = KILL_GRACE_S * 10
    return (f"kill -TERM -- -{pgid} 2>/dev/null; for i in $(seq {steps}); do "
            f"kill -0 -- -{pgid} 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL -- -{pgid} 2>/dev/null; exit 0")


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
