from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import tracker
from tests.factories import execution_in
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.processor import Processor, ProcessorOptions
from tracker.service.sweeper import Sweeper
from tracker.testing import RecordingMiddleware

pytestmark = [pytest.mark.usefixtures("store")]


def consumer(queue: str = "reports", **options: object) -> tracker.TrackedConsumer:
    async def handle(task: TaskContext) -> None: ...

    return tracker.tracked(queue, retry_policy=FAST, **options)(handle)  # type: ignore[arg-type]


@pytest.mark.rabbitmq
async def test_the_deadline_fails_a_late_execution_and_refuses_its_completion(
    broker: Broker,
) -> None:
    # Given: a first attempt that runs past the 1 s timeout (the worker itself would stop it
    # only after 5 s more), and no sweeper
    queue = await broker.new_queue()
    finished: list[int] = []

    @tracker.tracked(
        queue, timeout=1, timeout_message="make report timeout", max_retries=1, retry_policy=FAST
    )
    async def report(task: TaskContext) -> str:
        if task.retry_count == 0:
            await asyncio.sleep(1.8)
        finished.append(task.retry_count)
        return "written"

    recorder = RecordingMiddleware()
    async with (
        tracker.Worker(
            [report], broker.url, lease=30, sweep_interval=None, middleware=[recorder]
        ) as worker,
        tracker.Publisher(broker.url) as pub,
    ):
        # When
        await pub.enqueue(queue, {}, task_id="reports:late")
        chain = await wait_status("reports:late", "completed")
        await recorder.wait_for(stale=1)
    # Then: failed once, by the deadline, with the seed's message; the late result refused
    first, retry = chain
    assert first.status is TaskStatus.FAILED
    assert first.error_message == "make report timeout"
    assert first.error_category is tracker.ErrorCategory.INFRASTRUCTURE
    assert [h.status for h in first.history].count(TaskStatus.FAILED) == 1
    assert first.result is None
    assert retry.status is TaskStatus.COMPLETED
    assert finished == [1, 0]  # the retry finished before the late first attempt returned
    stale = worker.metrics.registry.get_sample_value(
        "tracker_stale_outcomes_total", {"queue": queue, "handler": report.name}
    )
    assert stale == 1


async def test_deadline_and_sweeper_racing_fail_the_execution_once() -> None:
    # Given: an execution stuck in processing past its timeout
    execution, token = await execution_in(TaskStatus.PROCESSING, queue="reports")
    published: list[OutgoingMessage] = []

    async def publish(message: OutgoingMessage) -> None:
        published.append(message)

    reports = consumer(timeout=0.001, max_retries=0)
    processor = Processor(reports, ProcessorOptions(worker_id="w"))
    sweeper = Sweeper({"reports": processor.outcomes}, publish, stuck_grace=0)
    await asyncio.sleep(0.01)
    # When: the deadline listener and the sweeper act at once
    deadline, swept = await asyncio.gather(
        processor.expire(execution.execution_id, token),
        sweeper.fail_stuck("reports", processor.outcomes),
    )
    # Then: exactly one of them failed it
    assert (deadline is not None) + swept == 1
    after = await TaskTracker.find_execution(execution.execution_id)
    assert after is not None
    assert after.status is TaskStatus.DLQ
    assert [h.status for h in after.history].count(TaskStatus.DLQ) == 1
    # the dead letter is in MongoDB only: no copy is published to reports.dlq
    published += deadline.publish if deadline is not None else ()
    assert [m.routing_key for m in published] == []


async def test_a_deadline_for_a_finished_or_reclaimed_execution_does_nothing() -> None:
    processor = Processor(consumer(timeout=0.001), ProcessorOptions(worker_id="w"))
    done, token = await execution_in(TaskStatus.COMPLETED)
    assert await processor.expire(done.execution_id, token) is None
    running, _ = await execution_in(TaskStatus.PROCESSING)
    assert await processor.expire(running.execution_id, "an-older-claim") is None
    assert (await TaskTracker.find_execution(running.execution_id)).status is TaskStatus.PROCESSING  # type: ignore[union-attr]


async def test_the_sweeper_republishes_an_execution_left_without_message() -> None:
    # Given: a publisher wrote an execution and died before publishing it
    created = await tracker.create_execution("reports:orphan", "reports", {"n": 1})
    published: list[OutgoingMessage] = []

    async def publish(message: OutgoingMessage) -> None:
        published.append(message)

    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    sweeper = Sweeper({"reports": processor.outcomes}, publish, republish_after=0.2)
    await asyncio.sleep(0.25)
    # When
    first = await sweeper.sweep()
    second = await sweeper.sweep()
    # Then: published once to the work queue, not again at the next sweep
    assert first.republished == 1
    assert second.republished == 0
    assert [(m.routing_key, m.message_id) for m in published] == [
        ("reports", created.execution.execution_id)
    ]


async def test_auto_archive_moves_old_dead_letters_only() -> None:
    # Given: two dead letters, one enqueued eight days ago; one old completed execution
    old, _ = await execution_in(TaskStatus.DLQ)
    recent, _ = await execution_in(TaskStatus.DLQ)
    done, _ = await execution_in(TaskStatus.COMPLETED)
    eight_days_ago = utcnow() - timedelta(days=8)
    for execution in (old, done):
        await TaskTracker.get_pymongo_collection().update_one(
            {"executionId": execution.execution_id}, {"$set": {"enqueuedAt": eight_days_ago}}
        )

    async def publish(message: OutgoingMessage) -> None:
        raise AssertionError("archiving publishes nothing")

    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    # When
    report = await Sweeper(
        {"reports": processor.outcomes}, publish, archived_by="sweeper@test"
    ).sweep()
    # Then
    assert report.archived == 1
    archived = await TaskTracker.find_execution(old.execution_id)
    assert archived is not None
    assert archived.status is TaskStatus.ARCHIVED
    assert archived.archived_reason == "Auto-archived after 7 days"
    assert archived.archived_by == "sweeper@test"
    assert archived.expires_at is not None
    assert timedelta(days=29) < archived.expires_at - utcnow() <= timedelta(days=30)
    for untouched, status in ((recent, TaskStatus.DLQ), (done, TaskStatus.COMPLETED)):
        current = await TaskTracker.find_execution(untouched.execution_id)
        assert current is not None
        assert current.status is status


@pytest.mark.rabbitmq
async def test_retention_sets_expiry_by_outcome(broker: Broker) -> None:
    # Given: a queue keeping completed executions a day, and failed attempts ten days
    queue = await broker.new_queue()

    @tracker.tracked(
        queue,
        retry_policy=FAST,
        max_retries=1,
        retention=timedelta(days=1),
        archived_retention=timedelta(days=10),
    )
    async def handle(task: TaskContext) -> None:
        if task.payload["kind"] == "dead":
            raise tracker.ValidationError("never")
        if task.payload["kind"] == "flaky" and task.retry_count == 0:
            raise tracker.TransientError("once")

    async with tracker.Worker([handle], broker.url), tracker.Publisher(broker.url) as pub:
        for kind in ("flaky", "dead"):
            await pub.enqueue(queue, {"kind": kind}, task_id=f"ret:{kind}")
        flaky = await wait_status("ret:flaky", "completed")
        [dead] = await wait_status("ret:dead", "dlq")
    # Then: completed expire after a day, failed attempts after ten, dead letters never
    now = utcnow()
    failed, completed = flaky
    assert completed.expires_at is not None
    assert timedelta(hours=23) < completed.expires_at - now <= timedelta(days=1)
    assert failed.expires_at is not None
    assert timedelta(days=9) < failed.expires_at - now <= timedelta(days=10)
    assert dead.expires_at is None
