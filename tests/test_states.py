from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.factories import execution_in
from tracker import (
    TRANSITIONS,
    InvalidTransitionError,
    StaleClaimError,
    TaskNotFoundError,
    TaskStatus,
    TaskTracker,
    claim,
    create_execution,
    transition,
)
from tracker.store.leases import release_claim, renew_lease

pytestmark = [pytest.mark.mongodb, pytest.mark.usefixtures("store")]

ALLOWED = [(src, dst) for src, targets in TRANSITIONS.items() for dst in targets]
REFUSED = [
    (src, dst)
    for src, dst in itertools.product(TaskStatus, TaskStatus)
    if src is not dst and dst not in TRANSITIONS[src]
]


def test_the_table_is_the_documented_lifecycle() -> None:
    assert sorted(ALLOWED) == sorted(
        [
            (TaskStatus.QUEUED, TaskStatus.PROCESSING),
            (TaskStatus.PROCESSING, TaskStatus.COMPLETED),
            (TaskStatus.PROCESSING, TaskStatus.FAILED),
            (TaskStatus.PROCESSING, TaskStatus.DLQ),
            (TaskStatus.DLQ, TaskStatus.ARCHIVED),
        ]
    )


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=lambda s: s.value)
async def test_allowed_transition_writes_status_history_and_updated_at(
    source: TaskStatus, target: TaskStatus
) -> None:
    # Given
    execution, token = await execution_in(source)
    await asyncio.sleep(0.002)  # MongoDB stores milliseconds; let the clock move past them
    # When
    if target is TaskStatus.PROCESSING:
        result = await claim(execution.execution_id, worker="w2", lease=30)
        outcome = (result.execution.status if result.execution else None, result.won)
    else:
        outcome = await transition(
            execution.execution_id, target, claim_token=token, message="why", worker="w1"
        )
    # Then
    assert outcome == (target, True)
    after = await TaskTracker.find_execution(execution.execution_id)
    assert after is not None
    assert after.status is target
    assert after.history[-1].status is target
    assert after.updated_at > execution.updated_at
    assert after.updated_at == after.history[-1].at
    assert len(after.history) == len(execution.history) + 1
    if not target.is_active:
        assert after.active_key is None


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=lambda s: s.value)
async def test_refused_transition_raises_and_writes_nothing(
    source: TaskStatus, target: TaskStatus
) -> None:
    # Given
    execution, _ = await execution_in(source)
    # When / Then
    if target is TaskStatus.PROCESSING:
        result = await claim(execution.execution_id, worker="w2", lease=30)
        assert not result.won
    else:
        with pytest.raises(InvalidTransitionError, match="does not allow"):
            await transition(execution.execution_id, target)
    after = await TaskTracker.find_execution(execution.execution_id)
    assert after is not None
    assert after.status is source
    assert after.history == execution.history
    assert after.updated_at == execution.updated_at


async def test_repeating_a_transition_reports_no_change() -> None:
    execution, _ = await execution_in(TaskStatus.DLQ)
    assert await transition(execution.execution_id, TaskStatus.ARCHIVED) == (
        TaskStatus.ARCHIVED,
        True,
    )
    assert await transition(execution.execution_id, TaskStatus.ARCHIVED) == (
        TaskStatus.ARCHIVED,
        False,
    )


async def test_transition_of_unknown_execution_raises() -> None:
    with pytest.raises(TaskNotFoundError):
        await transition("no-such-execution", TaskStatus.ARCHIVED)


async def test_fifty_concurrent_claims_have_one_winner() -> None:
    # Given
    execution, _ = await execution_in(TaskStatus.QUEUED)
    # When
    claims = await asyncio.gather(
        *(claim(execution.execution_id, worker=f"w{i}", lease=30) for i in range(50))
    )
    # Then
    winners = [c for c in claims if c.won]
    assert len(winners) == 1
    assert all(c.execution is not None for c in claims)
    stored = await TaskTracker.find_execution(execution.execution_id)
    assert stored is not None
    assert stored.claim_token == winners[0].token
    assert [h.status for h in stored.history].count(TaskStatus.PROCESSING) == 1


async def test_fifty_concurrent_enqueues_leave_one_active_execution() -> None:
    created = await asyncio.gather(
        *(create_execution("reports:same", "reports", {"i": i}) for i in range(50))
    )
    assert sum(not c.deduplicated for c in created) == 1
    assert sum(c.deduplicated for c in created) == 49
    assert len({c.execution.execution_id for c in created}) == 1
    assert len(await TaskTracker.find({"taskId": "reports:same"}).to_list()) == 1


async def test_a_finished_task_accepts_a_new_execution() -> None:
    execution, _ = await execution_in(TaskStatus.COMPLETED, task_id="reports:again")
    again = await create_execution("reports:again", "reports", {})
    assert not again.deduplicated
    assert again.execution.execution_id != execution.execution_id


async def test_dedupe_window_returns_a_recent_completion() -> None:
    execution, _ = await execution_in(TaskStatus.COMPLETED, task_id="reports:recent")
    within = await create_execution("reports:recent", "reports", {}, dedupe_window=60)
    assert within.deduplicated
    assert within.execution.execution_id == execution.execution_id
    outside = await create_execution("reports:recent", "reports", {}, dedupe_window=0)
    assert not outside.deduplicated


async def test_stale_claim_cannot_complete_or_fail_a_reclaimed_execution() -> None:
    # Given: w1 claimed, its lease ran out, w2 took the execution over
    execution, _ = await execution_in(TaskStatus.QUEUED)
    first = await claim(execution.execution_id, worker="w1", lease=30)
    assert first.token is not None
    assert await release_claim(execution.execution_id, first.token)
    second = await claim(execution.execution_id, worker="w2", lease=30)
    assert second.won
    assert second.taken_over
    # When / Then: w1's outcomes are refused, w2's lease is its own
    for target in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.DLQ):
        with pytest.raises(StaleClaimError):
            await transition(execution.execution_id, target, claim_token=first.token)
    assert not await renew_lease(execution.execution_id, first.token, 30)
    assert await renew_lease(execution.execution_id, second.token or "", 30)
    assert await transition(
        execution.execution_id, TaskStatus.COMPLETED, claim_token=second.token
    ) == (TaskStatus.COMPLETED, True)
    with pytest.raises(StaleClaimError):
        await transition(execution.execution_id, TaskStatus.COMPLETED, claim_token=first.token)


async def test_a_live_claim_is_not_taken_over() -> None:
    execution, _ = await execution_in(TaskStatus.QUEUED)
    assert (await claim(execution.execution_id, worker="w1", lease=30)).won
    assert not (await claim(execution.execution_id, worker="w2", lease=30)).won


async def test_claim_of_missing_record_returns_nothing() -> None:
    result = await claim("nobody", worker="w1", lease=30)
    assert result.execution is None
    assert not result.won
