"""What the runner does next, as pure functions of run state: ready, blocked, retry, outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from skyflow.backends.base import StageExit
from skyflow.spec.models import Stage

DONE = ("succeeded", "cached")
FINAL = ("succeeded", "cached", "failed", "skipped", "cancelled")


def ready_stages(order: tuple[str, ...], upstream: Mapping[str, list[str]], states: Mapping[str, str]) -> list[str]:
    """Pending stages whose upstream stages all finished well, in pipeline order."""
    return [s for s in order if states[s] == "pending" and all(states[u] in DONE for u in upstream[s])]


def blocked_stages(order: tuple[str, ...], upstream: Mapping[str, list[str]], states: Mapping[str, str]) -> list[str]:
    """Pending stages that can never run because an upstream stage failed, was skipped or cancelled."""
    bad = {s for s, st in states.items() if st in ("failed", "skipped", "cancelled")}
    blocked: list[str] = []
    for stage in order:  # order is topological, so a chain of skips resolves in one pass
        if states[stage] == "pending" and any(u in bad for u in upstream[stage]):
            blocked.append(stage)
            bad.add(stage)
    return blocked


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float
    reason: str
    recovery: bool = False  # granted by job_recovery rather than `retries`


def retry_decision(stage: Stage, attempt: int, restarts: int, outcome: StageExit,
                   base_delay_s: float = 1.0) -> RetryDecision:
    """Whether attempt number ``attempt`` (1-based) gets another try, and after how long.

    `retries` covers any failure; `job_recovery` adds recovery from preemption (killed from outside,
    like a reclaimed spot VM), `recover_on_exit_codes` and up to `max_restarts_on_errors` restarts.
    Timeouts and cancellation are final.
    """
    if outcome.ok or outcome.cancelled:
        return RetryDecision(False, 0.0, "")
    recovery = stage.resources.job_recovery
    delay = min(base_delay_s * 2 ** (attempt - 1), 60 * base_delay_s)
    if recovery is not None and not outcome.timed_out:
        if outcome.preempted:
            return RetryDecision(True, delay, f"recovering from preemption ({outcome.reason})", recovery=True)
        if outcome.exit_code in recovery.recover_on_exit_codes:
            return RetryDecision(True, delay, f"exit code {outcome.exit_code} is in recover_on_exit_codes",
                                 recovery=True)
        if restarts < recovery.max_restarts_on_errors:
            return RetryDecision(True, delay, f"restart {restarts + 1} of {recovery.max_restarts_on_errors} on error",
                                 recovery=True)
    failures = attempt - restarts
    if not outcome.timed_out and failures <= stage.retries:
        return RetryDecision(True, delay, f"retry {failures} of {stage.retries}")
    return RetryDecision(False, 0.0, outcome.reason)


def run_outcome(states: Mapping[str, str]) -> str:
    values = set(states.values())
    if "cancelled" in values:
        return "cancelled"
    if values <= set(DONE):
        return "succeeded"
    if values <= set(FINAL):
        return "failed"
    return "running"
