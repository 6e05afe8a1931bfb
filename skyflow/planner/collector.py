"""Python's cyclic garbage collector held off while a plan is made.

Planning builds hundreds of thousands of short-lived lists and tuples (the integer program's rows, the
search's moves) and holds no reference cycles of its own; reference counting frees all of it. Each
allocation burst still set off the cyclic collector, whose full passes walk every live object of the
process (the loaded catalog and pipeline included): on the bench's 1,000-stage DAG that was a third of
planning (building its integer program took 0.32 s with the collector, 0.12 s without). The collector
is held off while any plan is being made in the process and turned back on, if it was on, when the
last one ends; cycles made meanwhile (by other threads too) are collected then.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic collector off for the body; nested and concurrent uses share one pause."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
