"""A stage's log file: appended to by the log pumps of its nodes, rotated past a size limit.

A stage that prints without end cannot fill the disk: once the log would pass ``max_bytes``, it is
moved to ``stage.log.1`` (replacing an older one) and a new ``stage.log`` starts with a line saying
so. An attempt's log thus takes at most twice the limit, and the newest output (what a failure
tail shows) is always in ``stage.log``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path

__all__ = ["DEFAULT_MAX_LOG_MB", "StageLog", "describe_write_failure", "rotated_path"]

DEFAULT_MAX_LOG_MB = 1024.0


def rotated_path(path: Path) -> Path:
    return path.with_name(path.name + ".1")


class StageLog:
    """A log file that several threads append lines to; rotated once it would pass ``max_bytes``.

    Writes after `close` are dropped (a pump still draining a pipe held by an escaped process must
    not fail on a closed file).
    """

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else int(DEFAULT_MAX_LOG_MB * 2**20)
        self.rotations = 0
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._size = self._file.tell()
        self._lock = threading.Lock()
        self._closed = False

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._closed:
                return 0
            if self._size > 0 and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._size += len(data)
        return len(data)

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):  # a full disk: the write that failed was reported already
                self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        older = rotated_path(self.path)
        os.replace(self.path, older)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self.rotations += 1
        limit_mb = self.max_bytes / 2**20
        note = (f"skyflow: this stage's log reached its limit of {limit_mb:g} MiB (logs.max_stage_log_mb in "
                f"config.yaml) {self.rotations} time(s); the part before this line is in {older.name}, "
                "anything older was dropped\n").encode()
        self._file.write(note)
        self._size = len(note)


def describe_write_failure(path: Path, exc: OSError, what: str = "its log") -> str:
    """Why writing ``what`` at ``path`` failed, in words: for a full disk, which disk and how to go on."""
    named = f"{what} {path}" if what else str(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        with contextlib.suppress(OSError):
            free = f", {shutil.disk_usage(path.parent).free // 1024} KiB free now"
        return (f"no space left on the device holding {named} ({_device(path)}{free}); free space there, then "
                "`skyflow resume` the run")
    return f"writing {named} failed: {exc.strerror or exc}"


def _device(path: Path) -> str:
    """The mount point and file system type holding ``path`` (from /proc/self/mounts), or its device number."""
    best = ("", "")
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        resolved = str(path.resolve())
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ")
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best[0]):
                best = (point, fields[2])
    if best[0]:
        return f"{best[1]} mounted at {best[0]}"
    with contextlib.suppress(OSError):
        return f"device {os.stat(path.parent).st_dev}"
    return "its device"
