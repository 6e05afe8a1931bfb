"""Process groups and liveness on this machine (from /proc), for backends, the runner and the scheduler."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

__all__ = ["KILL_GRACE_S", "group_alive", "kill_process_groups", "process_alive"]

KILL_GRACE_S = 5.0


def kill_process_groups(groups: list[int], own: Sequence[subprocess.Popen[bytes]] = (),
                        starts: Mapping[int, str | None] | None = None) -> None:
    """SIGTERM each group, then SIGKILL what is left after a grace period.

    ``own`` are our child processes among the group leaders: they are reaped through Popen (a
    zombie leader still answers killpg, and reaping it behind Popen's back would make Popen
    report exit code 0 for a killed process). ``starts`` maps a group to its leader's
    `process_start` when it was recorded: a group whose id now names another process (the number
    was reused) is left alone.
    """
    def ours(pgid: int) -> bool:
        return starts is None or group_is_ours(pgid, starts.get(pgid))

    live = []
    for pgid in groups:
        if not ours(pgid):
            continue
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
        if ours(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def process_start(pid: int | None) -> str | None:
    """What tells this process from a later one that gets the same pid: the boot and the start time
    (clock ticks after boot, from /proc/PID/stat). None where there is no such process or no /proc."""
    fields = _proc_stat(pid) if pid else None
    boot = _boot_id()
    if fields is None or boot is None or len(fields) < 20:
        return None
    return f"{boot}:{fields[19]}"


def same_process(pid: int | None, start: str | None) -> bool:
    """Whether ``pid`` is alive and is still the process whose `process_start` was ``start``
    (None: recorded before start times were kept, so liveness is all that can be checked)."""
    if not process_alive(pid):
        return False
    return start is None or process_start(pid) == start


def group_is_ours(pgid: int, start: str | None) -> bool:
    """Whether process group ``pgid`` is alive and is still the group whose leader started at ``start``.

    A live process with the pid ``pgid`` must be that leader. With the leader gone, members left in
    the group are still ours: a number in use as a process group id is never given to a new process.
    """
    if start is not None and _proc_stat(pgid) is not None and process_start(pgid) != start:
        return False
    return group_alive(pgid)


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


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
