"""Bytes that artifact transfers move, told to the fsspec Callback the caller installs (the CLI's
progress bar); by default nobody listens.

Transfers run on worker threads, several at once, so the callback is process-wide and counts add up:
each transfer adds what it will move to the callback's size and every chunk to its value. Importing
this module does not import fsspec (40 ms): commands that only plan load it through the runner.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsspec.callbacks import Callback

_lock = threading.Lock()
_current: Callback | None = None  # nobody listens


@contextmanager
def reporting_transfers_to(callback: Callback) -> Iterator[Callback]:
    """Send the bytes of every transfer inside the block to ``callback``."""
    global _current
    with _lock:
        previous, _current = _current, callback
    try:
        yield callback
    finally:
        with _lock:
            _current = previous


def expect_bytes(count: int) -> None:
    """A transfer is about to move ``count`` bytes."""
    with _lock:
        if _current is not None:
            _current.set_size((_current.size or 0) + count)


def moved_bytes(count: int) -> None:
    """``count`` more bytes arrived (or were found already there)."""
    with _lock:
        if _current is not None:
            _current.relative_update(count)
