"""What the parent makes of the search child's messages: the pipe's framing, and how each message changes
the outcome and the progress reported (the child itself is tested in test_highs_child.py)."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator

import numpy as np
import pytest

from skyflow.planner.highs_child import _HEADER, ChildOutcome, _apply, _Messages, _send


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(fd)


def framed(message: tuple[object, ...]) -> bytes:
    body = pickle.dumps(message)
    return _HEADER.pack(len(body)) + body


def test_whole_messages_come_back_in_order_and_a_closed_pipe_reads_none(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    x = np.array([0.0, 1.0, 0.5])
    _send(write_fd, ("solution", 12.5, x.tobytes()))
    _send(write_fd, ("bound", 12.5, 11.0))
    messages = _Messages(read_fd)
    assert messages.read() == [("solution", 12.5, x.tobytes()), ("bound", 12.5, 11.0)]
    assert messages.buffer == bytearray()
    os.close(write_fd)
    assert messages.read() is None


def test_a_message_split_across_reads_is_kept_until_it_is_whole(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    first, second = framed(("bound", 3.0, 2.0)), framed(("error", "ValueError: x"))
    messages = _Messages(read_fd)
    os.write(write_fd, first[:3])  # not even the whole length header
    assert messages.read() == [] and bytes(messages.buffer) == first[:3]
    os.write(write_fd, first[3:-1])  # the header and all but the last byte of the body
    assert messages.read() == [] and bytes(messages.buffer) == first[:-1]
    os.write(write_fd, first[-1:] + second[:_HEADER.size + 2])
    assert messages.read() == [("bound", 3.0, 2.0)] and bytes(messages.buffer) == second[:_HEADER.size + 2]
    os.write(write_fd, second[_HEADER.size + 2:])
    assert messages.read() == [("error", "ValueError: x")] and messages.buffer == bytearray()


def test_a_message_longer_than_one_read_arrives_whole(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    big = np.arange(300_000, dtype=np.float64)  # 2.4 MB: more than one read of the pipe
    message = framed(("solution", 1.0, big.tobytes()))
    messages, found = _Messages(read_fd), []
    for start in range(0, len(message), 60_000):  # the pipe holds 64 KiB: write a part, read it
        os.write(write_fd, message[start:start + 60_000])
        found += messages.read() or []
    assert len(found) == 1 and np.array_equal(np.frombuffer(found[0][2]), big)


def outcome() -> ChildOutcome:
    return ChildOutcome(False, None, None, None, -np.inf)


def test_only_a_better_solution_replaces_the_one_kept() -> None:
    got = outcome()
    first, worse, better = (np.array([i, 0.0]).tobytes() for i in (1.0, 2.0, 3.0))
    _apply(got, ("solution", 10, first), None)
    assert got.x is not None
    assert (got.objective, list(got.x)) == (10.0, [1.0, 0.0]) and isinstance(got.objective, float)
    _apply(got, ("solution", 10.0, worse), None)  # as good: the first found is kept
    _apply(got, ("solution", 11.0, worse), None)
    assert (got.objective, list(got.x)) == (10.0, [1.0, 0.0])
    _apply(got, ("solution", 9.5, better), None)
    assert (got.objective, list(got.x)) == (9.5, [3.0, 0.0])
    assert (got.finished, got.status, got.bound, got.error) == (False, None, -np.inf, None)


def test_bounds_only_rise_and_each_finite_one_is_reported_with_the_best_solution_so_far() -> None:
    got, heard = outcome(), []

    def report(best: float | None, bound: float) -> None:
        heard.append((best, bound))

    _apply(got, ("bound", np.inf, -np.inf), report)  # no bound yet: nothing to tell
    _apply(got, ("bound", 20.0, 7), report)
    assert got.bound == 7.0 and isinstance(got.bound, float)
    _apply(got, ("solution", 12.0, np.zeros(1).tobytes()), report)
    _apply(got, ("bound", 12.0, 6.0), report)  # a lower bound than one already known is not kept
    assert got.bound == 7.0
    _apply(got, ("bound", 12.0, 8.0), None)  # nobody listening: still kept
    assert got.bound == 8.0 and heard == [(None, 7.0), (12.0, 6.0)]
    assert all(isinstance(bound, float) for _, bound in heard)


def test_the_end_message_sets_the_status_the_final_bound_and_the_solution_it_names() -> None:
    got = outcome()
    _apply(got, ("solution", 5.0, np.array([1.0]).tobytes()), None)
    _apply(got, ("bound", 5.0, 4.0), None)
    _apply(got, ("done", "kOptimal", 4.5, np.array([2.0]).tobytes(), 4.5), None)
    assert got.x is not None
    assert (got.finished, got.status, got.bound, got.objective, list(got.x)) == (True, "kOptimal", 4.5, 4.5, [2.0])
    stopped = outcome()
    _apply(stopped, ("solution", 5.0, np.array([1.0]).tobytes()), None)
    _apply(stopped, ("done", "kTimeLimit", 0.0, None, 3), None)  # no solution in the end message: keep ours
    assert stopped.x is not None
    assert (stopped.finished, stopped.status, stopped.bound, stopped.objective, list(stopped.x)) == \
        (True, "kTimeLimit", 3.0, 5.0, [1.0])
    assert isinstance(stopped.bound, float)


def test_an_error_message_is_kept_as_text() -> None:
    got = outcome()
    _apply(got, ("error", ValueError("bad model")), None)
    assert got.error == "bad model" and not got.finished
