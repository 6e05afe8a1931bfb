"""SIGTERM and SIGINT are acted on outside the signal handler: the code a signal interrupts may hold
the locks the action needs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from skyflow.signals import act_on_signals, acting_on_signals


@pytest.fixture
def restore_usr1() -> Iterator[None]:
    """SIGUSR1's handler put back afterwards, and a deadlock fails the test instead of stalling the suite."""
    def fail(*_: object) -> None:
        raise AssertionError("deadlocked: the action ran inside the signal handler")

    previous = signal.getsignal(signal.SIGUSR1)
    previous_alarm = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous_alarm)
    signal.signal(signal.SIGUSR1, previous)


def test_a_signal_arriving_while_the_main_thread_holds_the_actions_lock_is_acted_on_after(
        restore_usr1: None) -> None:
    lock = threading.Lock()  # not reentrant: an action run inside the handler would wait on itself
    acted: list[signal.Signals] = []
    done = threading.Event()

    def action(signum: signal.Signals) -> None:
        with lock:
            acted.append(signum)
            done.set()

    act_on_signals((signal.SIGUSR1,), action, name="test-signals")
    with lock:
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # the handler runs here, inside the block
        assert not done.wait(0.3)  # nothing acts while the lock is held
    assert done.wait(30), "the action never ran"
    assert acted == [signal.SIGUSR1]


def test_the_watcher_ends_without_acting_once_done(restore_usr1: None) -> None:
    done = threading.Event()
    acted: list[signal.Signals] = []
    act_on_signals((signal.SIGUSR1,), acted.append, name="test-signals-done", done=done)
    done.set()
    watchers = [t for t in threading.enumerate() if t.name == "test-signals-done"]
    for thread in watchers:
        thread.join(30)
    assert not any(t.is_alive() for t in watchers) and acted == []


BLOCKED_AT_START = """
import signal, sys, threading
from skyflow.signals import act_on_signals
acted = threading.Event()
act_on_signals((signal.SIGTERM,), lambda signum: acted.set(), name="blocked-at-start")
print("ready", flush=True)
print("acted" if acted.wait(60) else "never acted", flush=True)
"""


def test_a_process_started_with_sigterm_blocked_still_acts_on_it() -> None:
    # A signal mask is inherited across exec: a runner started by a program that blocks SIGTERM in the
    # starting thread would otherwise hold every `skyflow cancel` pending for ever.
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_AT_START], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "acted\n"
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_the_callers_signal_mask_comes_back_after_the_block() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        with acting_on_signals((signal.SIGUSR1, signal.SIGUSR2), lambda signum: None, name="test-mask"):
            assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        after = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert signal.SIGUSR1 in after and signal.SIGUSR2 not in after
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
