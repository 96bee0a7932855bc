"""Deciding what to do with a delivery, free of I/O.

``decide`` maps what the delivery is (a valid task or a validation failure, a redelivery or
not) and what the store said when the worker tried to claim its execution to one ``Action``.
``Decision`` is what the transport carries out at the end: publish the follow-ups with
confirms, then ack the delivery or return it to its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from tracker.delivery.envelope import OutgoingMessage
from tracker.errors import HandlerInterrupt
from tracker.lifecycle import TaskStatus

Outcome = Literal[
    "completed",
    "retried",
    "dead_lettered",
    "rejected",
    "duplicate",
    "stale",
    "store_unavailable",
    "parked",
    "interrupted",
    "error",
]


@dataclass(frozen=True)
class Decision:
    """What the transport does with a delivery: publish ``publish`` with confirms, then ack it,
    or (``requeue``) wait ``requeue_delay`` seconds and return it to its queue."""

    outcome: Outcome
    publish: tuple[OutgoingMessage, ...] = ()
    requeue: bool = False
    requeue_delay: float = 0.0
    execution_id: str | None = None
    # Set when the handler asked the process to stop: the worker stops after settling.
    interrupt: HandlerInterrupt | None = None
    # Nothing about the delivery can be stored: the broker keeps it in the queue's .dlq.
    park: bool = False


class Action(StrEnum):
    """The next step for a delivery after its claim attempt."""

    RUN = "run"  # this worker holds the claim: run the handler
    TRACK_ON_ARRIVAL = "track_on_arrival"  # no record (a plain producer): create one, run
    REJECT = "reject"  # bad input owning no execution: recorded under an id of its own
    REJECT_CLAIMED = "reject_claimed"  # bad input of an execution it claimed: dead-letter it
    WAIT_FOR_LEASE = "wait_for_lease"  # a redelivery while a claim is live: its holder may be dead
    RECOVER_RETRY = "recover_retry"  # a failed attempt whose retry may be missing
    SKIP_DUPLICATE = "skip_duplicate"  # finished, or held under a live claim: ack, do not run


@dataclass(frozen=True)
class Sighting:
    """What the store said of the delivery's execution when the worker tried to claim it."""

    found: bool
    won: bool = False
    status: TaskStatus | None = None
    has_next_execution: bool = False
    # The execution id exists, but under another task or queue: not this delivery's.
    foreign: bool = False


def decide(*, valid: bool, redelivered: bool, sighting: Sighting | None) -> Action:
    """The one table: every (stored status x delivery kind) pair maps to one action.
    ``sighting`` is None when nothing was claimed: a delivery that names no usable ids."""
    if sighting is None or sighting.foreign:
        return Action.REJECT
    if not sighting.found:
        return Action.TRACK_ON_ARRIVAL if valid else Action.REJECT
    if sighting.won:
        return Action.RUN if valid else Action.REJECT_CLAIMED
    if sighting.status is TaskStatus.PROCESSING and redelivered:
        # The delivery came back because its holder's channel closed: that holder may be dead.
        return Action.WAIT_FOR_LEASE
    if sighting.status is TaskStatus.FAILED and sighting.has_next_execution and redelivered:
        # Its holder died after recording the failure: maybe before the retry was stored or
        # published. (A copy that is not a redelivery had a live holder: no need.)
        return Action.RECOVER_RETRY
    return Action.SKIP_DUPLICATE
