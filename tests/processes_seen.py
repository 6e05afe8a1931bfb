"""What the tests that start processes wait on and read of them: a condition asked until it holds (a
deadline against a hung suite, never a timing), and a process's state from /proc."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WAIT_S = 60.0


def wait_for(check: Callable[[], T], what: str, within_s: float = WAIT_S) -> T:
    """``check()``'s first true value, asked every 50 ms; an AssertionError naming ``what`` after ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T for stopped, Z: ended, not yet reaped), or "" once the
    process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
