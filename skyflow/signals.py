"""Acting on SIGTERM and SIGINT without doing the work inside the signal handler.

A Python signal handler runs in the main thread between two bytecodes of whatever it interrupted. One
that logs, sets a ``threading.Event`` or takes a lock can meet a lock that code holds (a write to the
log stream under way fails as a "reentrant call", and the error escapes into the interrupted code; the
Event's own lock inside ``wait``; a lock the run loop holds) and never return. So the handler only
notes the signal, and a watcher thread does the work.

The handler itself runs in the main thread only, and only between bytecodes. A signal the kernel gives
to another thread (the main thread had it blocked for a moment, as `subprocess` does while it starts a
process) reaches Python's handler once the main thread next runs Python code: a main thread asleep in
a wait with no timeout (a lock, `concurrent.futures.wait`) does not wake for it. Such a wait must end
every MAIN_THREAD_WAKE_S. A process started with the signals blocked (a mask is inherited across exec)
would never see them: they are unblocked while acted on.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["MAIN_THREAD_WAKE_S", "act_on_signals", "acting_on_signals", "wait_awake"]

_NOTICE_S = 0.05
MAIN_THREAD_WAKE_S = 0.2


def act_on_signals(signals: Iterable[signal.Signals], action: Callable[[signal.Signals], None], *,
                   name: str, done: threading.Event | None = None) -> None:
    """Call ``action(signal)`` from a watcher thread once one of ``signals`` arrives (the first one only).
    The watcher ends without acting once ``done`` is set. Call from the main thread."""
    wanted = list(signals)
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
    for signum in wanted:
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)


@contextmanager
def acting_on_signals(signals: Iterable[signal.Signals], action: Callable[[signal.Signals], None], *,
                      name: str) -> Iterator[None]:
    """Like `act_on_signals` while inside the block; on leaving it the watcher ends and the handlers
    that were there before come back (a Python caller's Ctrl-C raises KeyboardInterrupt again)."""
    wanted = list(signals)
    previous = {signum: signal.getsignal(signum) for signum in wanted}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    done = threading.Event()
    act_on_signals(wanted, action, name=name, done=done)
    try:
        yield
    finally:
        done.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_BLOCK, [s for s in wanted if s in blocked])


def wait_awake(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)`` for a main thread that acts on signals: woken every MAIN_THREAD_WAKE_S,
    so that a handler left pending by a signal another thread received runs meanwhile."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        event.wait(min(left, MAIN_THREAD_WAKE_S))
    return True
