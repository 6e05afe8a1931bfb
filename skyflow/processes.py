"""Process groups, stage process trees and liveness on this machine (from /proc), for backends, the
runner and the scheduler."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

__all__ = ["KILL_GRACE_S", "STAGE_TOKEN_VARIABLE", "attempt_token", "end_attempt", "end_processes_with_token",
           "group_alive", "kill_process_groups", "new_stage_token", "process_alive", "processes_with_token"]

KILL_GRACE_S = 5.0
# Every process of a local stage attempt carries this variable with the attempt's own token: a child
# that left the stage's process group and session (`setsid`, a daemonizing server) still carries it,
# so the attempt's whole process tree can be found, and ended, from /proc.
STAGE_TOKEN_VARIABLE = "SKYFLOW_STAGE_TOKEN"
# Scans after the SIGKILLs, for children forked between a scan and the signal.
_KILL_SCANS = 20


def skip_final_collections() -> None:
    """For the end of skyflow's own short processes (the CLI, the lineage drain), never of a process
    that runs a user's code: the interpreter's last collections at exit walk every object still
    alive, about a third of a short command's CPU (0.35 s of 0.9 s with the run modules loaded; a
    fifth of the drain's, with MLflow). Objects left at exit are not collected either way; what must
    be written is flushed before (atexit, logging, the standard streams)."""
    gc.freeze()


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
    live = _wait_until_gone(live, own)
    for pgid in live:
        if ours(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    # A process killed on a loaded machine takes a moment to die: the caller (`skyflow ui` freeing its
    # port, a cancelled stage) goes on once the groups are gone.
    _wait_until_gone(live, own)


def _wait_until_gone(groups: list[int], own: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    """Wait up to KILL_GRACE_S for ``groups`` to have no live member; those that still have one."""
    deadline = time.monotonic() + KILL_GRACE_S
    while groups and time.monotonic() < deadline:
        for proc in own:
            proc.poll()
        groups = [g for g in groups if group_alive(g)]
        if groups:
            time.sleep(0.05)
    return groups


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


def kill_process(pid: int, start: str | None) -> bool:
    """SIGKILL the process ``pid`` if it is still the one whose `process_start` was ``start``, and wait
    (up to KILL_GRACE_S) for it to die; whether it is gone."""
    _signal(pid, start, signal.SIGKILL)
    deadline = time.monotonic() + KILL_GRACE_S
    while same_process(pid, start) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not same_process(pid, start)


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


def new_stage_token() -> str:
    """A token for one attempt's processes (random: no later attempt, run or user shares it)."""
    return secrets.token_hex(12)


def attempt_token(log_path: str | os.PathLike[str]) -> str:
    """The token of the local attempt whose log is ``log_path``: that folder is the home's, the run's, the
    stage's and the attempt number's, so no other attempt shares it, and the runner records it before it
    starts any process. A new runner finds the attempt's processes from that path alone, even where the
    runner before it died between starting them and recording them."""
    import hashlib

    return hashlib.sha256(os.fsencode(os.path.abspath(log_path))).hexdigest()[:24]


def end_attempt(groups: Sequence[int], recorded_token: str | None, log_path: str | None) -> None:
    """End what a local attempt left: its process groups, the processes carrying its recorded token, and
    those carrying the token of its log path (`attempt_token`), for an attempt whose runner died after
    starting it and before recording the rest."""
    kill_process_groups(list(groups))
    end_processes_with_token(recorded_token)
    if log_path and attempt_token(log_path) != recorded_token:
        end_processes_with_token(attempt_token(log_path))


def processes_with_token(token: str) -> dict[int, str | None]:
    """pid -> `process_start` of every live process (other than this one) whose environment carries
    ``STAGE_TOKEN_VARIABLE=token``, read from /proc/PID/environ. Processes of other users, whose
    environment cannot be read, are not found."""
    needle = f"\0{STAGE_TOKEN_VARIABLE}={token}\0".encode()
    me = os.getpid()
    found: dict[int, str | None] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle not in b"\0" + environ.read():
                    continue
        except OSError:
            continue
        if process_alive(int(entry)):  # a zombie's environment reads empty; this is for a racing exit
            found[int(entry)] = process_start(int(entry))
    return found


def end_processes_with_token(token: str | None, grace_s: float = KILL_GRACE_S) -> int:
    """SIGTERM every process carrying ``token`` (see `processes_with_token`), SIGKILL those left after
    ``grace_s``, and scan again until none is left (a process may fork while it is being ended).

    This ends what left the attempt's process groups: `setsid` children, daemons. Each pid is
    signalled only while it is still the process that was found (its start time is checked).
    Returns how many processes were found.
    """
    if not token:
        return 0
    found = processes_with_token(token)
    seen = set(found)
    for pid, start in found.items():
        _signal(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = {pid: start for pid, start in found.items() if same_process(pid, start)}
    for _ in range(_KILL_SCANS):
        left = processes_with_token(token)
        if not left:
            break
        seen.update(left)
        for pid, start in left.items():
            _signal(pid, start, signal.SIGKILL)
        time.sleep(0.02)
    return len(seen)


def _signal(pid: int, start: str | None, signum: signal.Signals) -> None:
    if same_process(pid, start):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
