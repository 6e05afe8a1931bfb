"""The runner's decisions, exactly: each bad upstream state, every field of a RetryDecision, each reason text."""

from __future__ import annotations

import pytest

from skyflow.backends.base import StageExit
from skyflow.runner.decisions import FINAL, RetryDecision, blocked_stages, retry_decision, run_outcome
from skyflow.spec.models import Stage

ORDER = ("prep", "train", "eval", "side")
UP = {"prep": [], "train": ["prep"], "eval": ["train"], "side": []}


def stage(**fields: object) -> Stage:
    return Stage.model_validate({"run": "x", **fields})


FAIL = StageExit(1, "exit code 1")
EXIT_3 = StageExit(3, "exit code 3")
PREEMPTED = StageExit(-9, "killed by SIGKILL")
TIMEOUT = StageExit(-9, "timed out after 10s", timed_out=True)
CANCELLED = StageExit(-15, "cancelled", cancelled=True)


@pytest.mark.parametrize("bad", ["failed", "skipped", "cancelled"])
def test_each_bad_upstream_state_blocks_the_whole_chain_below(bad: str) -> None:
    states = {"prep": bad, "train": "pending", "eval": "pending", "side": "pending"}
    assert blocked_stages(ORDER, UP, states) == ["train", "eval"]


@pytest.mark.parametrize("good", ["succeeded", "cached", "running", "pending"])
def test_an_upstream_that_may_still_finish_well_blocks_nothing(good: str) -> None:
    states = {"prep": good, "train": "pending", "eval": "pending", "side": "pending"}
    assert blocked_stages(ORDER, UP, states) == []


@pytest.mark.parametrize("outcome", [StageExit(0), StageExit(0, "done"), CANCELLED])
def test_success_and_cancellation_decide_no_retry_with_no_delay_and_no_reason(outcome: StageExit) -> None:
    decision = retry_decision(stage(retries=3), 1, 0, outcome, 1.0)
    assert decision == RetryDecision(False, 0.0, "")
    assert decision.retry is False and decision.recovery is False
    assert type(decision.delay_s) is float and decision.reason == ""


def test_preemption_is_recovered_with_backoff_and_names_the_cause() -> None:
    spec = stage(resources={"use_spot": True, "job_recovery": "FAILOVER"})
    decision = retry_decision(spec, 3, 2, PREEMPTED, base_delay_s=0.5)
    assert decision == RetryDecision(True, 2.0, "recovering from preemption (killed by SIGKILL)", recovery=True)
    assert decision.recovery is True


def test_a_listed_exit_code_is_recovered() -> None:
    spec = stage(resources={"job_recovery": {"recover_on_exit_codes": [3]}})
    decision = retry_decision(spec, 2, 1, EXIT_3, base_delay_s=1.0)
    assert decision == RetryDecision(True, 2.0, "exit code 3 is in recover_on_exit_codes", recovery=True)
    assert decision.recovery is True


def test_restarts_on_error_count_up_to_the_limit() -> None:
    spec = stage(resources={"job_recovery": {"max_restarts_on_errors": 2}})
    first = retry_decision(spec, 1, 0, FAIL, base_delay_s=1.0)
    second = retry_decision(spec, 2, 1, FAIL, base_delay_s=1.0)
    assert first == RetryDecision(True, 1.0, "restart 1 of 2 on error", recovery=True)
    assert second == RetryDecision(True, 2.0, "restart 2 of 2 on error", recovery=True)
    assert retry_decision(spec, 3, 2, FAIL, base_delay_s=1.0) == RetryDecision(False, 0.0, "exit code 1")


def test_retries_count_failures_apart_from_restarts() -> None:
    """Restarts granted by job_recovery do not use up `retries`."""
    spec = stage(retries=1, resources={"job_recovery": {"max_restarts_on_errors": 1}})
    assert retry_decision(spec, 1, 0, FAIL, 1.0) == RetryDecision(True, 1.0, "restart 1 of 1 on error", recovery=True)
    assert retry_decision(spec, 2, 1, FAIL, 1.0) == RetryDecision(True, 2.0, "retry 1 of 1")
    assert retry_decision(spec, 3, 1, FAIL, 1.0) == RetryDecision(False, 0.0, "exit code 1")


def test_a_plain_retry_says_which_one_and_is_no_recovery() -> None:
    decision = retry_decision(stage(retries=2), 2, 0, FAIL, base_delay_s=1.0)
    assert decision == RetryDecision(True, 2.0, "retry 2 of 2")
    assert decision.recovery is False


@pytest.mark.parametrize(("fields", "outcome"), [
    ({}, FAIL),
    ({"retries": 5}, TIMEOUT),
    ({"resources": {"job_recovery": {"max_restarts_on_errors": 3}}}, TIMEOUT),
])
def test_a_final_failure_gives_the_outcomes_reason_and_no_delay(fields: dict[str, object],
                                                                 outcome: StageExit) -> None:
    decision = retry_decision(stage(**fields), 1, 0, outcome, base_delay_s=1.0)
    assert decision == RetryDecision(False, 0.0, outcome.reason)
    assert type(decision.delay_s) is float and decision.recovery is False


def test_run_outcome_with_every_final_state_but_cancelled_is_failed() -> None:
    every = {state: state for state in FINAL if state != "cancelled"}
    assert run_outcome(every) == "failed"
    assert run_outcome({"a": "skipped"}) == "failed"
    assert run_outcome({state: state for state in FINAL}) == "cancelled"
