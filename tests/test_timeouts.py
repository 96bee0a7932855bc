from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracker
from tests.factories import execution_in
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.delivery.envelope import Envelope, OutgoingMessage
from tracker.delivery.processor import Processor, ProcessorOptions
from tracker.errors import PublishError, StoreUnavailableError
from tracker.service.deadlines import DeadlineListener, deadline_body
from tracker.service.sweeper import Sweeper
from tracker.testing import RecordingMiddleware, capture_logs

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


class DeadlineDelivery:
    """A deadline message as the listener receives it, recording how it was settled."""

    def __init__(self, execution_id: str, token: str) -> None:
        self.envelope = Envelope(queue="reports.timeouts", body=deadline_body(execution_id, token))
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def requeue(self) -> None:
        self.settled.append("requeue")

    async def dead_letter(self) -> None:
        self.settled.append("dead_letter")


async def test_a_deadline_for_an_attempt_that_already_failed_reports_no_timeout() -> None:
    # Given: an attempt that failed on its own under its claim, its retry scheduled
    execution, token = await execution_in(TaskStatus.PROCESSING, queue="reports")
    processor = Processor(consumer(max_retries=3), ProcessorOptions(worker_id="w"))
    first = await processor.expire(execution.execution_id, token)
    assert first is not None
    assert first.outcome == "retried"
    published: list[OutgoingMessage] = []

    class Transport:
        async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
            published.append(message)

    listener = DeadlineListener(processor.outcomes, Transport(), 0.0)  # type: ignore[arg-type]
    delivery = DeadlineDelivery(execution.execution_id, token)
    # When: its deadline arrives afterwards
    with capture_logs() as logs:
        await listener.on_delivery(delivery)  # type: ignore[arg-type]
    # Then: acked, the retry made sure of, and no "timed out" claimed
    assert delivery.settled == ["ack"]
    assert [m.message_id for m in published] == [first.publish[0].message_id]
    assert not [line for line in logs if line["event"] == "execution timed out"]


class RawDeadline(DeadlineDelivery):
    """Whatever bytes arrive on ``Q.timeouts``."""

    def __init__(self, body: bytes) -> None:
        super().__init__("x", "y")
        self.envelope = Envelope(queue="reports.timeouts", body=body)


class NoPublish:
    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        raise AssertionError("nothing to publish")


@given(
    execution_id=st.one_of(st.text(max_size=600), st.integers(), st.none(), st.lists(st.text())),
    token=st.one_of(st.text(max_size=600), st.integers(), st.dictionaries(st.text(), st.text())),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_a_deadline_naming_no_possible_execution_is_settled_once_never_requeued(
    execution_id: object, token: object
) -> None:
    # Given: a deadline message whose fields are anything at all
    body = json.dumps({"executionId": execution_id, "claimToken": token}).encode()
    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    listener = DeadlineListener(processor.outcomes, NoPublish(), 0.0)  # type: ignore[arg-type]
    delivery = RawDeadline(body)
    # When
    await listener.on_delivery(delivery)  # type: ignore[arg-type]
    # Then: acked (there is nothing to fail), never requeued to come back for ever
    assert delivery.settled == ["ack"]


@pytest.mark.parametrize(
    ("error", "settled"),
    [
        (StoreUnavailableError("MongoDB is down"), "requeue"),
        (PublishError("the broker is gone"), "requeue"),
        (PublishError("no queue took it", maybe_published=False), "ack"),
        (RuntimeError("a bug"), "ack"),
        (ValueError("never valid"), "ack"),
    ],
)
async def test_a_deadline_that_fails_is_requeued_only_if_it_can_pass_later(
    error: Exception, settled: str
) -> None:
    # Given: applying the deadline fails
    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))

    async def expire(execution_id: str, token: str) -> None:
        raise error

    processor.outcomes.expire = expire  # type: ignore[method-assign]
    listener = DeadlineListener(processor.outcomes, NoPublish(), 0.0)  # type: ignore[arg-type]
    delivery = DeadlineDelivery("reports:1:exec", "token")
    # When
    await listener.on_delivery(delivery)  # type: ignore[arg-type]
    # Then: a passing outage is tried again; what would fail every time is dropped (the
    # sweeper fails the execution past its deadline)
    assert delivery.settled == [settled]


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


async def test_a_republish_the_broker_refuses_is_tried_again_and_spares_the_others() -> None:
    # Given: two executions left without a message, and a broker refusing the first publish
    first = await tracker.create_execution("reports:orphan-1", "reports", {"n": 1})
    second = await tracker.create_execution("reports:orphan-2", "reports", {"n": 2})
    published: list[str | None] = []
    refusals = [PublishError("the broker is down")]

    async def publish(message: OutgoingMessage) -> None:
        if refusals:
            raise refusals.pop()
        published.append(message.message_id)

    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    sweeper = Sweeper({"reports": processor.outcomes}, publish, republish_after=0.05)
    await asyncio.sleep(0.1)
    # When: one sweep meets the refusal, the next one does not
    first_sweep = await sweeper.sweep()
    second_sweep = await sweeper.sweep()
    # Then: the refused one is not marked republished, and both end up published once
    assert first_sweep.republished == 1
    assert second_sweep.republished == 1
    assert sorted(published) == sorted(
        [first.execution.execution_id, second.execution.execution_id]
    )


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


async def test_a_stored_payload_strict_json_refuses_still_runs_again() -> None:
    # Given: a payload an earlier version stored with NaN in it, and one over the enqueue
    # bound that a raw publish brought in (both held by MongoDB)
    nan = await tracker.create_execution("reports:nan", "reports", {"x": float("nan")})
    big = await tracker.create_execution("reports:big", "reports", {"s": "x" * (1024 * 1024)})
    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    # When: their messages are built again (a retry, a republish)
    messages = [
        processor.outcomes.retries.message_for(created.execution, 0.0) for created in (nan, big)
    ]
    # Then: as stored, never refused
    assert messages[0].body == b'{"x":NaN}'
    assert len(messages[1].body) > 1024 * 1024


async def test_a_payload_no_message_can_carry_does_not_stop_the_sweep() -> None:
    # Given: two executions left without message, the first with a payload JSON cannot encode
    # (stored through the Python API)
    await tracker.create_execution("reports:date", "reports", {"at": utcnow()})
    fine = await tracker.create_execution("reports:fine", "reports", {"n": 1})
    published: list[OutgoingMessage] = []

    async def publish(message: OutgoingMessage) -> None:
        published.append(message)

    processor = Processor(consumer(), ProcessorOptions(worker_id="w"))
    sweeper = Sweeper({"reports": processor.outcomes}, publish, republish_after=0.05)
    await asyncio.sleep(0.1)
    # When
    with capture_logs() as logs:
        swept = await sweeper.sweep()
    # Then: the other is republished, the one that cannot be is named in an error
    assert swept.republished == 1
    assert [m.message_id for m in published] == [fine.execution.execution_id]
    [error] = [line for line in logs if line["log_level"] == "error"]
    assert "cannot republish" in error["event"]
