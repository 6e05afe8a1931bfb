"""HiGHS under a wall-clock deadline it cannot overrun: the search runs in a forked child, killed at
the deadline.

HiGHS checks its time limit and interrupt callbacks between steps, and on large programs some steps
(presolve, the set-up before the root LP, a sub-MIP) take tens of seconds: a 5,000-stage program ran
40 s past its limit in-process. A child process can be ended at any moment. It reports each improving
plan and, now and then, its bound through a pipe, so what the parent returns at the deadline is the
best the search had found by then.

The child only runs HiGHS and writes to the pipe (no Python locks, no logging, no terminal), then
leaves with ``os._exit``: forking a process that has other threads is safe for that much. HiGHS's
own worker threads are ended before the fork (a child would wait on threads it does not have).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_HEADER = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
# How often the child sends its bound while it searches (seconds).
_BOUND_EVERY_S = 0.5


@dataclass
class ChildOutcome:
    """What a search in a child found by the time it ended or was ended."""

    finished: bool  # the child's run() returned (else it was killed at the deadline, or died)
    status: str | None  # HiGHS's model status (its enum name, e.g. kOptimal), when finished
    x: np.ndarray | None  # the best solution's values (original space), if any was found
    objective: float | None  # HiGHS's objective of ``x``
    bound: float  # HiGHS's last dual bound (-inf: none yet)
    error: str | None = None  # the child failed (an exception's text, or how it died)
    pid: int = 0  # the child's process id (reaped when this is returned)


def run_in_child(h: Any, deadline: float, clock: Callable[[], float],
                 report: Callable[[float | None, float], None] | None = None) -> ChildOutcome:
    """Run the prepared solver ``h`` (model passed, options and start set) in a forked child until it
    ends or ``clock()`` reaches ``deadline``; ``report(best, bound)`` hears the search's progress (best:
    the objective of the best solution it has handed back, None before the first)."""
    # HiGHS's worker threads, started by an earlier solve in this process, would not exist in the child
    # while its scheduler still counted on them (the child's search would hang): end them first; the
    # child starts its own, and this process again on its next solve.
    reset = getattr(type(h), "resetGlobalScheduler", None)
    if reset is not None:
        reset(True)
    read_fd, write_fd = os.pipe()
    parent, prctl = os.getpid(), _prctl()  # loaded here: the child imports nothing
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        _end_with(parent, prctl)
        _child(h, write_fd)  # never returns
    os.close(write_fd)
    outcome = ChildOutcome(False, None, None, None, -np.inf, pid=pid)
    reader = _Messages(read_fd)
    try:
        while True:
            left = deadline - clock()
            if left <= 0:
                break
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                continue
            messages = reader.read()
            if messages is None:  # the pipe closed: the child is done (or died)
                break
            for message in messages:
                _apply(outcome, message, report)
    finally:
        os.close(read_fd)
        if not outcome.finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not outcome.finished and outcome.error is None and clock() < deadline:
            outcome.error = f"the solver's process ended with {_ending(status)}"
    return outcome


def _ending(status: int) -> str:
    """How a process ended, from its wait status: its exit code, or the signal that ended it."""
    code = os.waitstatus_to_exitcode(status)
    return f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"


def _apply(outcome: ChildOutcome, message: tuple[Any, ...],
           report: Callable[[float | None, float], None] | None) -> None:
    kind = message[0]
    if kind == "solution":
        _, objective, x = message
        if outcome.objective is None or objective < outcome.objective:
            outcome.objective, outcome.x = float(objective), np.frombuffer(x, dtype=np.float64)
    elif kind == "bound":
        # HiGHS's own best is the objective in its presolved space, which can differ from the plan's cost:
        # the progress shows the best plan it has handed back, if any.
        _, _, bound = message
        outcome.bound = max(outcome.bound, float(bound))
        if report is not None and np.isfinite(bound):
            report(outcome.objective, float(bound))
    elif kind == "done":
        _, status, objective, x, bound = message
        outcome.finished, outcome.status = True, status
        outcome.bound = float(bound)
        if x is not None:
            outcome.objective, outcome.x = float(objective), np.frombuffer(x, dtype=np.float64)
    elif kind == "error":
        outcome.error = str(message[1])


def _prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None).prctl


def _end_with(parent: int, prctl: Callable[..., int] | None) -> None:
    """Have the kernel kill this child when its parent dies (Linux's PR_SET_PDEATHSIG): a planner killed
    outright (SIGKILL, or SIGTERM with no handler: no `finally` runs) would otherwise leave its search
    running to its time limit, and with none (`--time-limit 0`) for ever. The parent waits for this child
    in the thread that forked it, so that thread (whose end is what the kernel watches) outlives it."""
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)


def _child(h: Any, write_fd: int) -> None:
    # The parent's handlers (a runner's SIGTERM handler cancels a run and writes its state) are not the
    # child's business: a signal meant for the planner's process group simply ends the search.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    code = 0
    try:
        _search(h, write_fd)
    except BaseException as exc:  # reported to the parent, whatever it is
        with contextlib.suppress(BaseException):
            _send(write_fd, ("error", f"{type(exc).__name__}: {exc}"))
        code = 1
    finally:
        os._exit(code)


def _search(h: Any, write_fd: int) -> None:
    import time

    import highspy

    last = [0.0]

    def on_improving(event: Any) -> None:
        out = event.data_out
        _send(write_fd, ("solution", float(out.objective_function_value),
                         np.asarray(out.mip_solution, dtype=np.float64).tobytes()))

    def on_interrupt(event: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= _BOUND_EVERY_S:
            last[0] = now
            out = event.data_out
            _send(write_fd, ("bound", float(out.mip_primal_bound), float(out.mip_dual_bound)))

    h.cbMipImprovingSolution.subscribe(on_improving)
    h.cbMipInterrupt.subscribe(on_interrupt)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    found = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value, dtype=np.float64).tobytes() if found else None
    bound = float(info.mip_dual_bound)
    if status == highspy.HighsModelStatus.kOptimal and found:
        bound = float(info.objective_function_value)
    _send(write_fd, ("done", status.name, float(info.objective_function_value), x, bound))


def _send(fd: int, message: tuple[Any, ...]) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        written = os.write(fd, data)
        data = data[written:]


class _Messages:
    """Length-prefixed pickled messages from a pipe, as they arrive."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read(self) -> list[tuple[Any, ...]] | None:
        """The whole messages the pipe holds now; None once it is closed and drained."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self.buffer += chunk
        found = []
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            found.append(pickle.loads(bytes(self.buffer[_HEADER.size:_HEADER.size + size])))
            del self.buffer[:_HEADER.size + size]
        return found
