"""What the runner reports while it works: one event stream, to which the progress view and lineage subscribe."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyflow.artifacts import ArtifactRecord
    from skyflow.planner import Plan
    from skyflow.runner.state import StageRow

__all__ = ["INPUTS", "LOG", "RETRYING", "RUN_STARTED", "SERVING", "EventBus", "RunEvent", "run_ended"]

# Event kinds beside the stage states (skyflow.states.StageState): a run began (or resumed), a stage's
# inputs are known, an attempt is retried, a service answers, a line of stage output, the run ended.
RUN_STARTED = "run-started"
INPUTS = "inputs"
RETRYING = "retrying"
SERVING = "serving"
LOG = "log"


def run_ended(state: str) -> str:
    return f"run-{state}"


@dataclass(frozen=True)
class RunEvent:
    """One thing that happened; fields beyond ``kind``/``stage``/``message`` are set by the kinds that carry them."""

    kind: str  # a stage state, or one of the kinds above (INPUTS carries the code digest as its message)
    stage: str | None
    message: str = ""
    cost_usd: float = 0.0
    duration_s: float = 0.0
    run_id: str = ""
    row: StageRow | None = None  # a stage that reached a final state, as run state recorded it
    inputs: tuple[ArtifactRecord, ...] = ()
    plan: Plan | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    totals: Mapping[str, float] = field(default_factory=dict)


class EventBus:
    """Hands each event to every subscriber, in order (the progress view first, then lineage)."""

    def __init__(self, subscribers: Sequence[Callable[[RunEvent], None]] = ()) -> None:
        self.subscribers = list(subscribers)

    def subscribe(self, subscriber: Callable[[RunEvent], None]) -> None:
        self.subscribers.append(subscriber)

    def __call__(self, event: RunEvent) -> None:
        for subscriber in self.subscribers:
            subscriber(event)
