"""The runner's pure decisions: what is ready, what is blocked, what retries, how a run ends."""

from __future__ import annotations

import pytest

from skyflow.backends.base import StageExit
from skyflow.runner.decisions import blocked_stages, ready_stages, retry_decision, run_outcome
from skyflow.spec.models import Stage

ORDER = ("prep", "sft", "rm", "ppo", "eval", "side")
UP = {"prep": [], "sft": ["prep"], "rm": ["prep"], "ppo": ["sft", "rm"], "eval": ["ppo"], "side": []}


def states(**overrides: str) -> dict[str, str]:
    return {s: overrides.get(s, "pending") for s in ORDER}


def test_ready_needs_every_upstream_done() -> None:
    assert ready_stages(ORDER, UP, states()) == ["prep", "side"]
    assert ready_stages(ORDER, UP, states(prep="succeeded", side="running")) == ["sft", "rm"]
    assert ready_stages(ORDER, UP, states(prep="succeeded", sft="cached", rm="running")) == ["side"]
    assert ready_stages(ORDER, UP, states(prep="succeeded", sft="cached", rm="succeeded")) == ["ppo", "side"]


def test_failure_blocks_only_its_downstream() -> None:
    blocked = blocked_stages(ORDER, UP, states(prep="succeeded", sft="failed", rm="running"))
    assert blocked == ["ppo", "eval"]  # 'side' and the running 'rm' are independent


def test_run_outcome() -> None:
    assert run_outcome(states(**dict.fromkeys(ORDER, "succeeded"))) == "succeeded"
    assert run_outcome({"a": "cached", "b": "succeeded"}) == "succeeded"
    assert run_outcome({"a": "failed", "b": "skipped"}) == "failed"
    assert run_outcome({"a": "failed", "b": "running"}) == "running"
    assert run_outcome({"a": "cancelled", "b": "succeeded"}) == "cancelled"


def stage(**fields: object) -> Stage:
    return Stage.model_validate({"run": "x", **fields})


FAIL = StageExit(1, "exit code 1")
PREEMPTED = StageExit(-9, "killed by SIGKILL")
TIMEOUT = StageExit(-9, "timed out", timed_out=True)


@pytest.mark.parametrize(("fields", "attempt", "restarts", "outcome", "retry"), [
    ({}, 1, 0, FAIL, False),
    ({"retries": 2}, 1, 0, FAIL, True),
    ({"retries": 2}, 2, 0, FAIL, True),
    ({"retries": 2}, 3, 0, FAIL, False),
    ({"retries": 5}, 1, 0, TIMEOUT, False),
    ({}, 1, 0, PREEMPTED, False),
    ({"resources": {"use_spot": True, "job_recovery": "FAILOVER"}}, 4, 3, PREEMPTED, True),
    ({"resources": {"job_recovery": {"max_restarts_on_errors": 1}}}, 1, 0, FAIL, True),
    ({"resources": {"job_recovery": {"max_restarts_on_errors": 1}}}, 2, 1, FAIL, False),
    ({"resources": {"job_recovery": {"recover_on_exit_codes": [1]}}}, 7, 6, FAIL, True),
    ({"resources": {"job_recovery": {"recover_on_exit_codes": [2]}}}, 1, 0, FAIL, False),
])
def test_retry_decision(fields: dict[str, object], attempt: int, restarts: int, outcome: StageExit,
                        retry: bool) -> None:
    decision = retry_decision(stage(**fields), attempt, restarts, outcome, base_delay_s=1.0)
    assert decision.retry is retry


def test_backoff_doubles_and_is_capped() -> None:
    spec = stage(retries=20)
    delays = [retry_decision(spec, a, 0, FAIL, base_delay_s=1.0).delay_s for a in (1, 2, 3, 10)]
    assert delays == [1.0, 2.0, 4.0, 60.0]


def test_success_and_cancel_never_retry() -> None:
    spec = stage(retries=3)
    assert not retry_decision(spec, 1, 0, StageExit(0), 1.0).retry
    assert not retry_decision(spec, 1, 0, StageExit(-15, "cancelled", cancelled=True), 1.0).retry
