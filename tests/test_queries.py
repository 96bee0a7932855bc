from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.factories import execution_in
from tracker import (
    TaskStatus,
    TaskTracker,
    WaitTimeoutError,
    claim,
    create_execution,
    transition,
    wait_until_complete,
)
from tracker.clock import utcnow
from tracker.models import in_attempt_order

pytestmark = [pytest.mark.mongodb, pytest.mark.usefixtures("store")]


async def _attempt(task_id: str, retry_count: int, outcome: TaskStatus) -> str:
    created = await create_execution(task_id, "reports", {"x": 1}, retry_count=retry_count)
    assert not created.deduplicated
    won = await claim(created.execution.execution_id, worker="w", lease=30)
    await transition(created.execution.execution_id, outcome, claim_token=won.token)
    return created.execution.execution_id


async def test_retry_chain_comes_back_oldest_first() -> None:
    # Given: three attempts of one task
    ids = [
        await _attempt("reports:chain", 0, TaskStatus.FAILED),
        await _attempt("reports:chain", 1, TaskStatus.FAILED),
        await _attempt("reports:chain", 2, TaskStatus.COMPLETED),
    ]
    await _attempt("reports:other", 0, TaskStatus.COMPLETED)
    # When
    chain = await TaskTracker.find_retry_chain("reports:chain")
    # Then
    assert [doc.execution_id for doc in chain] == ids
    assert [doc.retry_count for doc in chain] == [0, 1, 2]
    assert [doc.status for doc in chain] == [
        TaskStatus.FAILED,
        TaskStatus.FAILED,
        TaskStatus.COMPLETED,
    ]


async def test_a_retry_stamped_before_its_attempt_still_follows_it() -> None:
    # Given: a failed attempt and its completed retry, the retry's createdAt 50 ms earlier
    # (written by a process whose clock runs behind), and a later run of the same task
    first = await create_execution("reports:skew", "reports", {})
    failed_id = first.execution.execution_id
    retry_id = "retry-of-skew"
    won = await claim(failed_id, worker="w", lease=30)
    await transition(
        failed_id, TaskStatus.FAILED, claim_token=won.token, fields={"nextExecutionId": retry_id}
    )
    retry = await create_execution(
        "reports:skew", "reports", {}, execution_id=retry_id, retry_count=1
    )
    assert not retry.deduplicated
    retry_won = await claim(retry_id, worker="w", lease=30)
    await transition(retry_id, TaskStatus.COMPLETED, claim_token=retry_won.token)
    earlier = first.execution.created_at - timedelta(milliseconds=50)
    await TaskTracker.get_pymongo_collection().update_one(
        {"executionId": retry_id}, {"$set": {"createdAt": earlier}}
    )
    # When
    chain = await TaskTracker.find_retry_chain("reports:skew")
    done = await wait_until_complete("reports:skew", timeout=2)
    # Then: the links order the chain, and the task is seen completed
    assert [doc.execution_id for doc in chain] == [failed_id, retry_id]
    assert done.status is TaskStatus.COMPLETED
    assert done.execution_id == retry_id


async def test_queue_stats_count_every_status() -> None:
    for status, count in [
        (TaskStatus.QUEUED, 2),
        (TaskStatus.PROCESSING, 1),
        (TaskStatus.COMPLETED, 3),
        (TaskStatus.FAILED, 1),
        (TaskStatus.DLQ, 2),
        (TaskStatus.ARCHIVED, 1),
    ]:
        for _ in range(count):
            await execution_in(status)
    await execution_in(TaskStatus.COMPLETED, queue="emails")
    assert await TaskTracker.get_queue_stats("reports") == {
        "queued": 2,
        "processing": 1,
        "completed": 3,
        "failed": 1,
        "dlq": 2,
        "archived": 1,
    }
    assert await TaskTracker.get_queue_stats("nothing-here") == dict.fromkeys(
        [s.value for s in TaskStatus], 0
    )


async def test_stuck_tasks_and_is_stuck() -> None:
    execution, _ = await execution_in(TaskStatus.PROCESSING)
    await execution_in(TaskStatus.PROCESSING, queue="emails")
    assert not execution.is_stuck(timedelta(minutes=5))
    assert execution.is_stuck(0)
    assert await TaskTracker.find_stuck_tasks("reports", timedelta(minutes=5)) == []
    stuck = await TaskTracker.find_stuck_tasks("reports", 0)
    assert [doc.execution_id for doc in stuck] == [execution.execution_id]
    queued, _ = await execution_in(TaskStatus.QUEUED)
    assert not queued.is_stuck(0)


def test_can_retry_follows_retry_count_and_max_retries() -> None:
    doc = TaskTracker(task_id="t", queue_name="q", retry_count=2, max_retries=3)
    assert doc.can_retry()
    doc.retry_count = 3
    assert not doc.can_retry()
    assert TaskTracker(task_id="t", queue_name="q", retry_count=4).can_retry()  # seed default 5


async def test_wait_until_complete_returns_the_final_execution() -> None:
    execution, token = await execution_in(TaskStatus.PROCESSING, task_id="reports:wait")
    with pytest.raises(WaitTimeoutError, match="processing"):
        await wait_until_complete("reports:wait", timeout=0.05, poll_interval=0.01)
    await transition(execution.execution_id, TaskStatus.COMPLETED, claim_token=token)
    final = await wait_until_complete("reports:wait", timeout=1)
    assert final.execution_id == execution.execution_id
    assert final.status is TaskStatus.COMPLETED


async def test_stored_names_are_the_seed_camel_case() -> None:
    execution, _ = await execution_in(TaskStatus.DLQ)
    raw = await TaskTracker.get_pymongo_collection().find_one(
        {"executionId": execution.execution_id}
    )
    assert raw is not None
    for name in (
        "taskId",
        "executionId",
        "queueName",
        "messageVersion",
        "status",
        "enqueuedAt",
        "processingStartedAt",
        "failedAt",
        "retryCount",
        "metadata",
        "createdAt",
        "updatedAt",
        "history",
        "payload",
        "claimToken",
    ):
        assert name in raw, name
    assert "activeKey" not in raw  # absent, not null, once the execution is not active
    assert raw["status"] == "dlq"
    assert execution.updated_at.tzinfo is not None
    assert execution.updated_at <= utcnow()


async def test_saving_through_the_model_maintains_updated_at() -> None:
    execution, _ = await execution_in(TaskStatus.COMPLETED)
    await asyncio.sleep(0.002)
    execution.metadata["note"] = "edited by hand"
    await execution.save()
    stored = await TaskTracker.find_execution(execution.execution_id)
    assert stored is not None
    assert stored.metadata == {"note": "edited by hand"}
    assert stored.updated_at > stored.completed_at  # type: ignore[operator]


def test_attempts_whose_links_loop_still_come_back_each_once() -> None:
    # Given: two executions naming each other as their retry (written by hand)
    first = TaskTracker(task_id="t", execution_id="a", queue_name="q", next_execution_id="b")
    second = TaskTracker(
        task_id="t", execution_id="b", queue_name="q", retry_count=1, next_execution_id="a"
    )
    lone = TaskTracker(task_id="t", execution_id="c", queue_name="q")
    # When
    ordered = in_attempt_order([second, lone, first])
    # Then: nothing lost, nothing twice
    assert sorted(e.execution_id for e in ordered) == ["a", "b", "c"]
    assert ordered[0].execution_id == "c"
