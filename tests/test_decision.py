"""The decision table, without a broker or a store: every (stored status x delivery kind)
pair maps to one action."""

from __future__ import annotations

import itertools

import pytest

from tracker.delivery.decision import Action, Sighting, decide
from tracker.lifecycle import TaskStatus

NOT_WON = [s for s in TaskStatus]


def expected(valid: bool, redelivered: bool, sighting: Sighting | None) -> Action:
    """The table, written out as a reader of docs/consumers.md would state it."""
    if sighting is None or sighting.foreign:
        return Action.REJECT
    if not sighting.found:
        return Action.TRACK_ON_ARRIVAL if valid else Action.REJECT
    if sighting.won:
        return Action.RUN if valid else Action.REJECT_CLAIMED
    if sighting.status is TaskStatus.PROCESSING and redelivered:
        return Action.WAIT_FOR_LEASE
    if sighting.status is TaskStatus.FAILED and sighting.has_next_execution and redelivered:
        return Action.RECOVER_RETRY
    return Action.SKIP_DUPLICATE


SIGHTINGS = [
    None,
    Sighting(found=False),
    Sighting(found=False, foreign=True),
    *(
        Sighting(found=True, won=won, status=status, has_next_execution=has_next)
        for won, status, has_next in itertools.product((True, False), TaskStatus, (True, False))
    ),
]


@pytest.mark.parametrize("sighting", SIGHTINGS, ids=repr)
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
@pytest.mark.parametrize("redelivered", [True, False], ids=["redelivered", "first"])
def test_every_pair_maps_to_one_action(
    valid: bool, redelivered: bool, sighting: Sighting | None
) -> None:
    assert decide(valid=valid, redelivered=redelivered, sighting=sighting) is expected(
        valid, redelivered, sighting
    )


@pytest.mark.parametrize(
    ("valid", "redelivered", "sighting", "action"),
    [
        (True, False, Sighting(found=True, won=True, status=TaskStatus.PROCESSING), Action.RUN),
        (True, False, Sighting(found=False), Action.TRACK_ON_ARRIVAL),
        (False, False, Sighting(found=False), Action.REJECT),
        (False, False, Sighting(found=True, won=True), Action.REJECT_CLAIMED),
        (True, True, Sighting(found=False, foreign=True), Action.REJECT),
        (True, True, Sighting(found=True, status=TaskStatus.PROCESSING), Action.WAIT_FOR_LEASE),
        (True, False, Sighting(found=True, status=TaskStatus.PROCESSING), Action.SKIP_DUPLICATE),
        (
            True,
            True,
            Sighting(found=True, status=TaskStatus.FAILED, has_next_execution=True),
            Action.RECOVER_RETRY,
        ),
        (True, True, Sighting(found=True, status=TaskStatus.COMPLETED), Action.SKIP_DUPLICATE),
        (True, True, Sighting(found=True, status=TaskStatus.DLQ), Action.SKIP_DUPLICATE),
        (False, True, None, Action.REJECT),
    ],
)
def test_the_cases_the_docs_name(
    valid: bool, redelivered: bool, sighting: Sighting | None, action: Action
) -> None:
    # Given / When / Then
    assert decide(valid=valid, redelivered=redelivered, sighting=sighting) is action


def test_a_finished_execution_never_runs_again() -> None:
    for status in (TaskStatus.COMPLETED, TaskStatus.DLQ, TaskStatus.ARCHIVED, TaskStatus.FAILED):
        for redelivered, has_next in itertools.product((True, False), repeat=2):
            sighting = Sighting(found=True, status=status, has_next_execution=has_next)
            action = decide(valid=True, redelivered=redelivered, sighting=sighting)
            assert action in (Action.SKIP_DUPLICATE, Action.RECOVER_RETRY), (status, action)
