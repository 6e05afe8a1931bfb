"""Acting on SIGTERM and SIGINT without doing the work inside the signal handler.

A Python signal handler runs in the main thread between two bytecodes of whatever it interrupted. One
that logs, sets a ``threading.Event`` or takes a lock can meet a lock that code holds (a write to the
log stream under way fails as a "reentrant call", and the error escapes into the interrupted code; the
Event's own lock inside ``wait``; a lock the run loop holds) and never return. So the handler only
notes the signal, and a watcher thread does the work.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["act_on_signals", "acting_on_signals"]

_NOTICE_S = 0.05


def act_on_signals(signals: Iterable[signal.Signals], action: Callable[[signal.Signals], None], *,
                   name: str, done: threading.Event | None = None) -> None:
    """Call ``action(signal)`` from a watcher thread once one of ``signals`` arrives (the first one only).
    The watcher ends without acting once ``done`` is set."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    def watch() -> None:
        while not received:
            if done is not None and done.is_set():
                return
            time.sleep(_NOTICE_S)
        action(signal.Signals(received[0]))

    threading.Thread(target=watch, name=name, daemon=True).start()
    for signum in signals:
        signal.signal(signum, handler)


@contextmanager
def acting_on_signals(signals: Iterable[signal.Signals], action: Callable[[signal.Signals], None], *,
                      name: str) -> Iterator[None]:
    """Like `act_on_signals` while inside the block; on leaving it the watcher ends and the handlers
    that were there before come back (a Python caller's Ctrl-C raises KeyboardInterrupt again)."""
    wanted = list(signals)
    previous = {signum: signal.getsignal(signum) for signum in wanted}
    done = threading.Event()
    act_on_signals(wanted, action, name=name, done=done)
    try:
        yield
    finally:
        done.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
