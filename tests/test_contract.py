"""The transport contract: the same guarantees from both RabbitMQ adapters, against the real
broker. Every test runs once on the aio-pika ``Worker``/``Publisher`` and once on the pika
``tracked_callback``/``SyncPublisher`` (see tests/adapters.py).

Where the synchronous model cannot do what asyncio does — a running pika callback cannot be
cancelled — the substitute is tested instead: the deadline listener fails the attempt and the
late completion is refused.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

import tracker
from tests.adapters import Driver, sample
from tests.conftest import needs_in_memory
from tests.rabbit import FAST, Broker, wait_status
from tracker import ErrorCategory, TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.constants import HEADER_EXECUTION_ID, HEADER_TASK_ID
from tracker.middleware import Middleware
from tracker.testing import RecordingMiddleware, store_outage

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]

COMPLETED_HOOKS = ["before_process", "after_claim", "after_handler", "after_outcome", "before_ack"]


async def test_a_task_runs_once_with_the_hooks_in_order_and_counted(
    driver: Driver, broker: Broker
) -> None:
    # Given
    queue = await broker.new_queue()
    calls: list[Any] = []

    def produce(payload: Any, retry_count: int) -> Any:
        calls.append(payload)
        return {"n": payload["n"] * 2}

    recorder = RecordingMiddleware()
    driver.middleware = (recorder,)
    # When: the task is enqueued twice, then consumed
    first = await driver.enqueue(queue, {"n": 21}, task_id=f"{queue}:1")
    again = await driver.enqueue(queue, {"n": 21}, task_id=f"{queue}:1")
    await driver.start(queue, produce, (recorder,), retry_policy=FAST)
    await recorder.wait_for(completed=1)
    # Then
    assert calls == [{"n": 21}]
    assert again.deduplicated
    assert again.execution_id == first.execution_id
    assert recorder.hooks_for(first.execution_id) == [
        "on_enqueued",
        "on_enqueued",
        *COMPLETED_HOOKS,
    ]
    done = await TaskTracker.find_execution(first.execution_id)
    assert done is not None
    assert (done.status, done.result) == (TaskStatus.COMPLETED, {"n": 42})
    handler = {"queue": queue, "handler": produce.__qualname__}
    assert sample(driver, "tracker_completed_total", **handler) == 1
    assert sample(driver, "tracker_enqueued_total", queue=queue) == 1
    assert sample(driver, "tracker_enqueue_deduplicated_total", queue=queue) == 1
    await broker.wait_depth(queue, 0)


async def test_copies_of_a_delivery_are_skipped(driver: Driver, broker: Broker) -> None:
    # Given: a task and four more copies of its message
    queue = await broker.new_queue()
    calls: list[int] = []

    def count(payload: Any, retry_count: int) -> None:
        calls.append(retry_count)
        time.sleep(0.05)

    enqueued = await driver.enqueue(queue, {}, task_id=f"{queue}:dup")
    for _ in range(4):
        await broker.publish_raw(
            queue,
            {},
            headers={HEADER_TASK_ID: enqueued.task_id, HEADER_EXECUTION_ID: enqueued.execution_id},
            message_id=enqueued.execution_id,
            correlation_id=enqueued.task_id,
        )
    recorder = RecordingMiddleware()
    # When
    await driver.start(queue, count, (recorder,), retry_policy=FAST)
    await recorder.wait_for(completed=1, duplicate=4)
    # Then
    assert calls == [0]
    assert recorder.counts["on_duplicate"] == 4
    assert (
        sample(
            driver, "tracker_duplicate_deliveries_total", queue=queue, handler=count.__qualname__
        )
        == 4
    )


async def test_a_transient_failure_is_retried_through_a_delay_tier(
    driver: Driver, broker: Broker
) -> None:
    # Given
    queue = await broker.new_queue()

    def flaky(payload: Any, retry_count: int) -> str:
        if retry_count == 0:
            raise tracker.TransientError("partner timed out")
        return "ok"

    recorder = RecordingMiddleware()
    await driver.start(queue, flaky, (recorder,), retry_policy=FAST, max_retries=2)
    # When
    await driver.enqueue(queue, {}, task_id=f"{queue}:flaky")
    chain = await wait_status(f"{queue}:flaky", "completed")
    # Then
    assert [(d.status, d.retry_count) for d in chain] == [
        (TaskStatus.FAILED, 0),
        (TaskStatus.COMPLETED, 1),
    ]
    assert chain[0].next_execution_id == chain[1].execution_id
    assert chain[1].enqueued_at - chain[0].failed_at >= timedelta(seconds=0.2)  # type: ignore[operator]
    labels = {"queue": queue, "handler": flaky.__qualname__, "category": "transient"}
    assert sample(driver, "tracker_failed_total", **labels) == 1
    assert sample(driver, "tracker_retried_total", **labels) == 1
    assert recorder.counts["on_retry"] == 1


async def test_a_validation_error_is_dead_lettered(driver: Driver, broker: Broker) -> None:
    queue = await broker.new_queue()

    def strict(payload: Any, retry_count: int) -> None:
        raise ValueError("format 'xlsx' is not supported")

    await driver.start(queue, strict, (), retry_policy=FAST, max_retries=3)
    await driver.enqueue(queue, {"format": "xlsx"}, task_id=f"{queue}:bad")
    [dead] = await wait_status(f"{queue}:bad", "dlq")
    assert await broker.dlq_depth(queue) == 0  # the dead letter is in MongoDB, not copied
    assert dead.error_category is ErrorCategory.VALIDATION
    assert dead.error_message == "ValueError: format 'xlsx' is not supported"
    labels = {"queue": queue, "handler": strict.__qualname__, "category": "validation"}
    assert sample(driver, "tracker_dead_lettered_total", **labels) == 1


async def test_bad_input_is_rejected_and_the_consumer_goes_on(
    driver: Driver, broker: Broker
) -> None:
    # Given: a body that is not JSON, then a good message
    queue = await broker.new_queue()
    handled: list[Any] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda payload, n: handled.append(payload), (recorder,))
    await broker.publish_raw(queue, b"{not json", message_id="poison-1")
    await broker.publish_raw(queue, {"fine": True}, message_id="good-1", correlation_id="g:1")
    # When
    await recorder.wait_for(rejected=1, completed=1)
    # Then
    assert handled == [{"fine": True}]
    [poison] = await TaskTracker.find({"queueName": queue, "status": "dlq"}).to_list()
    assert poison.claimed_execution_id == "poison-1"
    assert poison.raw_body == b"{not json"
    assert "body is not valid JSON" in (poison.error_message or "")
    assert await broker.dlq_depth(queue) == 0
    assert sample(driver, "tracker_rejected_messages_total", queue=queue) == 1


async def test_a_late_attempt_is_failed_once_and_its_completion_refused(
    driver: Driver, broker: Broker
) -> None:
    # Given: a first attempt that blocks past its 1 s timeout. Neither adapter can interrupt
    # a blocking call. aio-pika: the deadline listener fails the attempt at the timeout (the
    # worker's own timer would act only after the 5 s grace), and the completion that comes
    # later is refused by the claim token. pika: the consumer fails the attempt itself at
    # the timeout and discards the callback's late outcome.
    queue = await broker.new_queue()
    finished: list[int] = []

    def slow(payload: Any, retry_count: int) -> str:
        if retry_count == 0:
            time.sleep(2.5)
        finished.append(retry_count)
        return "written"

    recorder = RecordingMiddleware()
    await driver.start(
        queue,
        slow,
        (recorder,),
        retry_policy=FAST,
        max_retries=1,
        timeout=1,
        timeout_message="make report timeout",
        timeout_grace=5,
        lease=30,
    )
    # When
    await driver.enqueue(queue, {}, task_id=f"{queue}:late")
    chain = await wait_status(f"{queue}:late", "completed")
    async with asyncio.timeout(10):
        while sorted(finished) != [0, 1]:
            await asyncio.sleep(0.05)
    # Then: one failure, with the queue's message; the late result is not recorded
    if driver.name == "aio-pika":
        await recorder.wait_for(stale=1)
    first, retry = await TaskTracker.find_retry_chain(f"{queue}:late")
    assert first.status is TaskStatus.FAILED
    assert first.error_message == "make report timeout"
    assert [h.status for h in first.history].count(TaskStatus.FAILED) == 1
    assert first.result is None
    assert retry.status is TaskStatus.COMPLETED
    assert [d.execution_id for d in chain] == [first.execution_id, retry.execution_id]
    stale = sample(driver, "tracker_stale_outcomes_total", queue=queue, handler=slow.__qualname__)
    assert stale == (1 if driver.name == "aio-pika" else 0)


async def test_retries_follow_max_retries_retry_on_and_classify(
    driver: Driver, broker: Broker
) -> None:
    # Given: KeyError made transient by retry_on, RuntimeError named partner_api by classify
    queue = await broker.new_queue()

    def failing(payload: Any, retry_count: int) -> None:
        raise KeyError("customer") if payload["kind"] == "key" else RuntimeError("503")

    def classify(error: BaseException) -> ErrorCategory | None:
        return ErrorCategory.PARTNER_API if isinstance(error, RuntimeError) else None

    await driver.start(
        queue,
        failing,
        (),
        retry_policy=FAST,
        max_retries=1,
        retry_on=(KeyError,),
        classify=classify,
    )
    # When
    for kind in ("key", "runtime"):
        await driver.enqueue(queue, {"kind": kind}, task_id=f"{queue}:{kind}")
    key = await wait_status(f"{queue}:key", "dlq")
    runtime = await wait_status(f"{queue}:runtime", "dlq")
    # Then: max_retries + 1 attempts each, categories from the options
    assert [(d.status, d.error_category) for d in key] == [
        (TaskStatus.FAILED, ErrorCategory.TRANSIENT),
        (TaskStatus.DLQ, ErrorCategory.TRANSIENT),
    ]
    assert [(d.status, d.error_category) for d in runtime] == [
        (TaskStatus.FAILED, ErrorCategory.PARTNER_API),
        (TaskStatus.DLQ, ErrorCategory.PARTNER_API),
    ]


async def test_the_payload_bound_and_retention_follow_the_options(
    driver: Driver, broker: Broker
) -> None:
    queue = await broker.new_queue()
    recorder = RecordingMiddleware()
    await driver.start(
        queue,
        lambda payload, n: "ok",
        (recorder,),
        max_payload_bytes=64,
        retention=timedelta(days=1),
    )
    small = await driver.enqueue(queue, {"n": 1}, task_id=f"{queue}:small")
    large = await driver.enqueue(queue, {"n": "x" * 200}, task_id=f"{queue}:large")
    await recorder.wait_for(completed=1, rejected=1)
    done = await TaskTracker.find_execution(small.execution_id)
    refused = await TaskTracker.find_execution(large.execution_id)
    assert done is not None
    assert refused is not None
    assert done.expires_at is not None
    assert timedelta(hours=23) < done.expires_at - utcnow() <= timedelta(days=1)
    assert refused.status is TaskStatus.DLQ
    assert "over the 64-byte limit" in (refused.error_message or "")


class CloseConnectionsOnce(Middleware):
    """Before the first ack, the broker drops every connection: the ack cannot be sent."""

    def __init__(self) -> None:
        self.done = False

    async def before_ack(self, envelope: Any, decision: Any) -> None:
        if self.done or decision.outcome != "completed":
            return
        self.done = True
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "close_all_connections",
            "test: the ack cannot be sent",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await process.wait() == 0
        await asyncio.sleep(0.5)


async def test_a_failed_ack_leaves_a_duplicate_that_is_skipped(
    driver: Driver, broker: Broker
) -> None:
    # Given: the connection is dropped between the durable outcome and the ack
    queue = await broker.new_queue()
    calls: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: calls.append(n), (CloseConnectionsOnce(), recorder))
    # When
    enqueued = await driver.enqueue(queue, {}, task_id=f"{queue}:ack")
    # Then: the redelivery is skipped as a duplicate; the handler ran once
    await recorder.wait_for(completed=1, duplicate=1, timeout=40)
    assert calls == [0]
    done = await TaskTracker.find_execution(enqueued.execution_id)
    assert done is not None
    assert done.status is TaskStatus.COMPLETED
    await broker.wait_depth(queue, 0, timeout=20)


async def test_a_long_handler_does_not_starve_the_heartbeat(driver: Driver, broker: Broker) -> None:
    # Given: a connection with a 1 s heartbeat and a handler that blocks for 4 s
    queue = await broker.new_queue()
    calls: list[int] = []
    recorder = RecordingMiddleware()

    def long(payload: Any, retry_count: int) -> None:
        calls.append(retry_count)
        time.sleep(4)

    await driver.start(queue, long, (recorder,))
    # When
    await driver.enqueue(queue, {}, task_id=f"{queue}:long")
    await recorder.wait_for(completed=1, timeout=30)
    # Then: the connection lived through it: no redelivery, no reconnection
    assert calls == [0]
    assert getattr(driver, "reconnects", 0) == 0


@needs_in_memory
async def test_mongodb_down_requeues_and_recovers(driver: Driver, broker: Broker) -> None:
    queue = await broker.new_queue()
    calls: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: calls.append(n), (recorder,))
    with store_outage():
        await broker.publish_raw(queue, {}, message_id="o-1", correlation_id="o:1")
        await recorder.wait_for(store_unavailable=2)
        assert calls == []
    await recorder.wait_for(completed=1)
    assert calls == [0]


async def test_a_refused_publish_rolls_the_execution_back(driver: Driver, broker: Broker) -> None:
    # Given: a queue of that name exists with other arguments, so the broker refuses it
    queue = f"test-conflict-{uuid.uuid4().hex[:8]}"
    broker.queues.append(queue)
    await broker.channel.declare_queue(queue, durable=False, auto_delete=True)
    # When / Then
    with pytest.raises(tracker.PublishError, match="rolled back"):
        await driver.enqueue(queue, {}, task_id=f"{queue}:refused")
    assert await TaskTracker.find({"taskId": f"{queue}:refused"}).to_list() == []
