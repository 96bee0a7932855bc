from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tracker
from tests.conftest import needs_in_memory
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.constants import (
    HEADER_EXECUTION_ID,
    HEADER_MESSAGE_VERSION,
    HEADER_RETRY_COUNT,
    HEADER_TASK_ID,
)
from tracker.testing import RecordingMiddleware, capture_logs

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


def worker(broker: Broker, *consumers: tracker.TrackedConsumer, **options: Any) -> tracker.Worker:
    options.setdefault("lease", 2.0)
    options.setdefault("requeue_delay", 0.1)
    return tracker.Worker(list(consumers), broker.url, **options)


async def test_happy_path_runs_the_handler_once_and_empties_the_queue(broker: Broker) -> None:
    # Given
    queue = await broker.new_queue()
    calls: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> dict[str, Any]:
        calls.append(task.execution_id)
        return {"path": f"/reports/{task.payload['id']}.csv"}

    recorder = RecordingMiddleware()
    # When
    async with worker(broker, handle, middleware=[recorder]), tracker.Publisher(broker.url) as pub:
        result = await pub.enqueue(queue, {"id": 7}, task_id="reports:7")
        await recorder.wait_for(completed=1)
    # Then
    assert not result.deduplicated
    assert calls == [result.execution_id]
    done = await TaskTracker.find_execution(result.execution_id)
    assert done is not None
    assert done.status is TaskStatus.COMPLETED
    assert done.result == {"path": "/reports/7.csv"}
    assert [h.status for h in done.history] == [
        TaskStatus.QUEUED,
        TaskStatus.PROCESSING,
        TaskStatus.COMPLETED,
    ]
    assert await broker.depth(queue) == 0
    assert await broker.dlq_depth(queue) == 0


async def test_enqueue_of_an_active_task_publishes_nothing(broker: Broker) -> None:
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        first = await pub.enqueue(queue, {"a": 1}, task_id="reports:same")
        second = await pub.enqueue(queue, {"a": 1}, task_id="reports:same")
    assert second.deduplicated
    assert second.execution_id == first.execution_id
    await broker.wait_depth(queue, 1)


async def test_twenty_copies_of_one_message_run_the_handler_once(broker: Broker) -> None:
    # Given: one enqueued message and 19 more copies with the same executionId
    queue = await broker.new_queue()
    calls: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        calls.append(task.execution_id)
        await asyncio.sleep(0.05)

    async with tracker.Publisher(broker.url) as pub:
        result = await pub.enqueue(queue, {"n": 1}, task_id="reports:dup")
    headers = {
        HEADER_TASK_ID: result.task_id,
        HEADER_EXECUTION_ID: result.execution_id,
        HEADER_RETRY_COUNT: 0,
        HEADER_MESSAGE_VERSION: "1.0",
    }
    for _ in range(19):
        await broker.publish_raw(
            queue,
            {"n": 1},
            headers=headers,
            message_id=result.execution_id,
            correlation_id=result.task_id,
        )
    recorder = RecordingMiddleware()
    # When
    async with worker(broker, handle, middleware=[recorder], concurrency=5):
        await recorder.wait_for(completed=1, duplicate=19)
    # Then
    assert calls == [result.execution_id]
    assert recorder.counts["on_duplicate"] == 19
    assert await broker.depth(queue) == 0


async def test_transient_failures_then_success_make_a_retry_chain(broker: Broker) -> None:
    # Given: a handler that fails twice with a transient error
    queue = await broker.new_queue()
    seen_at: list[float] = []

    @tracker.tracked(queue, max_retries=3, retry_policy=FAST)
    async def flaky(task: TaskContext) -> str:
        seen_at.append(asyncio.get_running_loop().time())
        if task.retry_count < 2:
            raise tracker.TransientError("partner API timed out")
        return "ok"

    # When
    async with worker(broker, flaky), tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {"x": 1}, task_id="reports:flaky")
        chain = await wait_status("reports:flaky", "completed")
    # Then
    assert [doc.status for doc in chain] == [
        TaskStatus.FAILED,
        TaskStatus.FAILED,
        TaskStatus.COMPLETED,
    ]
    assert [doc.retry_count for doc in chain] == [0, 1, 2]
    assert len({doc.execution_id for doc in chain}) == 3
    assert chain[0].next_execution_id == chain[1].execution_id
    assert chain[0].error_category is tracker.ErrorCategory.TRANSIENT
    assert chain[0].error_message == "partner API timed out"
    # backoff 0.2 s then 0.4 s (no jitter), through the delay queues
    assert seen_at[1] - seen_at[0] >= 0.2
    assert seen_at[2] - seen_at[1] >= 0.4


async def test_validation_error_goes_to_the_dlq_without_retry(broker: Broker) -> None:
    queue = await broker.new_queue()
    attempts: list[int] = []

    @tracker.tracked(queue, max_retries=3, retry_policy=FAST)
    async def strict(task: TaskContext) -> None:
        attempts.append(task.retry_count)
        raise ValueError("format 'xlsx' is not supported")

    async with worker(broker, strict), tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {"format": "xlsx"}, task_id="reports:bad")
        chain = await wait_status("reports:bad", "dlq")
    assert attempts == [0]
    assert len(chain) == 1
    assert chain[0].error_category is tracker.ErrorCategory.VALIDATION
    assert chain[0].error_message == "ValueError: format 'xlsx' is not supported"
    assert "format 'xlsx'" in (chain[0].error_stack or "")
    assert chain[0].payload == {"format": "xlsx"}
    assert await broker.dlq_depth(queue) == 0  # the dead letter is in MongoDB, not copied


async def test_retries_exhausted_end_in_the_dlq_after_max_retries_plus_one(broker: Broker) -> None:
    queue = await broker.new_queue()

    @tracker.tracked(queue, max_retries=2, retry_policy=FAST)
    async def always_down(task: TaskContext) -> None:
        raise ConnectionError("partner is down")

    async with worker(broker, always_down), tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id="reports:down")
        chain = await wait_status("reports:down", "dlq")
    assert [doc.status for doc in chain] == [TaskStatus.FAILED, TaskStatus.FAILED, TaskStatus.DLQ]
    assert [doc.retry_count for doc in chain] == [0, 1, 2]
    assert chain[-1].error_category is tracker.ErrorCategory.TRANSIENT


POISON = [
    ("not-json", b"{not json", {}, "body is not valid JSON"),
    ("not-utf8", b"\xff\xfe\x00", {}, "body is not UTF-8 text"),
    ("no-identity", b"{}", None, "message has no task identity"),
    (
        "bad-retry-count",
        b"{}",
        {HEADER_RETRY_COUNT: "three"},
        "x-retry-count must be a non-negative integer",
    ),
    ("bad-task-header", b"{}", {HEADER_TASK_ID: 42}, "x-task-id must be a non-empty string"),
    ("id-mismatch", b"{}", {HEADER_EXECUTION_ID: "other"}, "does not match message_id"),
    (
        "unknown-version",
        b"{}",
        {HEADER_MESSAGE_VERSION: "9.0"},
        "unsupported message version '9.0'",
    ),
    ("oversized", b'"' + b"x" * 3000 + b'"', {}, "over the 2048-byte limit"),
]


async def test_poison_input_ends_in_the_dlq_and_the_worker_keeps_consuming(broker: Broker) -> None:
    # Given: every kind of bad input published raw, then a good message
    queue = await broker.new_queue()
    handled: list[Any] = []

    @tracker.tracked(queue, retry_policy=FAST, max_payload_bytes=2048)
    async def handle(task: TaskContext) -> None:
        handled.append(task.payload)

    for name, body, headers, _ in POISON:
        if headers is None:
            await broker.publish_without_ids(queue, body)
        else:
            await broker.publish_raw(queue, body, headers=headers, message_id=f"poison-{name}")
    recorder = RecordingMiddleware()
    # When
    async with worker(broker, handle, middleware=[recorder]):
        await recorder.wait_for(rejected=len(POISON))
        await broker.publish_raw(queue, {"fine": True}, message_id="good-one")
        await recorder.wait_for(completed=1)
    # Then
    assert handled == [{"fine": True}]
    assert await broker.dlq_depth(queue) == 0  # recorded in MongoDB, not copied
    dead = await TaskTracker.find({"queueName": queue, "status": "dlq"}).to_list()
    assert len(dead) == len(POISON)
    reasons = sorted(doc.error_message or "" for doc in dead)
    for name, _, _, expected in POISON:
        assert any(expected in reason for reason in reasons), (name, reasons)
    assert all(doc.error_category is tracker.ErrorCategory.VALIDATION for doc in dead)


async def test_a_plain_producer_message_is_tracked_on_arrival(broker: Broker) -> None:
    queue = await broker.new_queue()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        return task.task_id

    recorder = RecordingMiddleware()
    async with worker(broker, handle, middleware=[recorder]):
        await broker.publish_raw(queue, {"plain": 1}, correlation_id="orders:991", message_id="m-1")
        await recorder.wait_for(completed=1)
    chain = await TaskTracker.find_retry_chain("orders:991")
    assert [(d.execution_id, d.status, d.result) for d in chain] == [
        ("m-1", TaskStatus.COMPLETED, "orders:991")
    ]
    assert chain[0].history[0].message == "tracked on arrival"


@needs_in_memory
async def test_mongodb_outage_requeues_without_loss_and_recovers(broker: Broker) -> None:
    # Given: MongoDB is down when the message arrives
    from tracker.testing import store_outage

    queue = await broker.new_queue()
    calls: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        calls.append(task.execution_id)

    recorder = RecordingMiddleware()
    async with worker(broker, handle, middleware=[recorder]):
        with store_outage():
            await broker.publish_raw(queue, {"n": 1}, message_id="outage-1", correlation_id="o:1")
            # When: it is delivered repeatedly while the store is unreachable
            await recorder.wait_for(store_unavailable=3)
            assert calls == []
        # Then: once MongoDB is back, it is processed exactly once
        await recorder.wait_for(completed=1)
    assert calls == ["outage-1"]
    assert await broker.depth(queue) == 0
    assert await broker.dlq_depth(queue) == 0


async def test_every_log_line_in_a_handler_carries_the_task_identity(broker: Broker) -> None:
    queue = await broker.new_queue()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        task.log.info("from task.log")
        import structlog

        structlog.get_logger("user.code").info("from a plain logger")

    recorder = RecordingMiddleware()
    with capture_logs() as logs:
        async with (
            worker(broker, handle, middleware=[recorder]),
            tracker.Publisher(broker.url) as pub,
        ):
            result = await pub.enqueue(queue, {}, task_id="reports:logs")
            await recorder.wait_for(completed=1)
    inside = [e for e in logs if e["event"] in ("from task.log", "from a plain logger")]
    assert len(inside) == 2
    for entry in inside:
        assert entry["queue"] == queue
        assert entry["task_id"] == "reports:logs"
        assert entry["execution_id"] == result.execution_id
        assert entry["retry_count"] == 0


async def test_the_worker_reconnects_after_the_broker_drops_it(broker: Broker) -> None:
    # Given: a running worker that has processed one message
    queue = await broker.new_queue()
    done: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        done.append(task.task_id)

    recorder = RecordingMiddleware()
    async with worker(broker, handle, middleware=[recorder]):
        await broker.publish_raw(queue, {}, message_id="before", correlation_id="r:before")
        await recorder.wait_for(completed=1)
        # When: the broker closes the worker's connection
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "close_all_connections",
            "test: dropped on purpose",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await proc.wait() == 0
        await broker.publish_raw(queue, {}, message_id="after", correlation_id="r:after")
        # Then: it reconnects and consumes again
        await recorder.wait_for(completed=2, timeout=30)
    assert done == ["r:before", "r:after"]
