"""The cyclic collector is held off while a plan is made, and left as it was found."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import NoReturn

import pytest

from skyflow.planner.collector import collector_paused
from skyflow.planner.core import plan_pipeline


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_off_inside_and_back_on_after(collector_on: None) -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_left_off_when_it_was_off(collector_on: None) -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_back_on_after_an_error(collector_on: None) -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("planning failed")
    assert gc.isenabled()


def test_overlapping_pauses_end_with_the_last(collector_on: None) -> None:
    """Two plans in two threads: the first to end does not turn the collector on under the second, and the
    last turns it back on (one thread saving "off" as it found it would leave it off for good)."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_in.wait(60)
        first_out.set()

    def second() -> None:
        first_in.wait(60)
        with collector_paused():
            second_in.set()
            first_out.wait(60)
            seen["after the first ended"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert seen == {"after the first ended": False}
    assert gc.isenabled()


def test_plan_pipeline_runs_with_the_collector_off(collector_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyflow.planner.core as core

    seen: list[bool] = []

    def spy(*args: object, **kwargs: object) -> NoReturn:
        seen.append(gc.isenabled())
        raise RuntimeError("stop here")

    monkeypatch.setattr(core, "CandidateFinder", spy)
    with pytest.raises(RuntimeError):
        plan_pipeline(None, None, None)  # type: ignore[arg-type]
    assert seen == [False]
    assert gc.isenabled()
