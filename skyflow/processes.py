"""Process groups and liveness on this machine (from /proc), for backends, the runner and the scheduler."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

__all__ = ["KILL_GRACE_S", "group_alive", "kill_process_groups", "process_alive"]

KILL_GRACE_S = 5.0


def kill_process_groups(groups: list[int], own: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """SIGTERM each group, then SIGKILL what is left after a grace period.

    ``own`` are our child processes among the group leaders: they are reaped through Popen (a
    zombie leader still answers killpg, and reaping it behind Popen's back would make Popen
    report exit code 0 for a killed process).
    """
    live = []
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
            live.append(pgid)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + KILL_GRACE_S
    while live and time.monotonic() < deadline:
        for proc in own:
            proc.poll()
        live = [g for g in live if group_alive(g)]
        time.sleep(0.05)
    for pgid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a live (non-zombie) member."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return not _only_zombies(pgid)


def _only_zombies(pgid: int) -> bool:
    """True when every process left in the group is a zombie (dead, waiting for its parent)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        fields = _proc_stat(int(entry)) if entry.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None) -> bool:
    """Whether a process is running (a zombie, dead and waiting for its parent, is not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"
