"""The synchronous pika adapter against the real broker, with the store on its own thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from tests.rabbit import FAST
from tracker import TaskStatus, TaskTracker
from tracker.constants import HEADER_EXECUTION_ID, HEADER_TASK_ID, dlq_name
from tracker.rabbit.pika import StoreThread, SyncPublisher, declare_topology, tracked_callback
from tracker.rabbit.topology import topology_queue_names
from tracker.testing import RecordingMiddleware

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def store() -> Iterator[StoreThread]:
    thread = StoreThread.connect(None, f"tracker_pika_{uuid.uuid4().hex[:8]}")
    yield thread
    thread.close()


@pytest.fixture
def channel(amqp_url: str) -> Iterator[tuple[pika.BlockingConnection, Any, str]]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    queue = f"test-pika-{uuid.uuid4().hex[:8]}"
    declare_topology(channel, queue, FAST.tiers_ms)
    yield connection, channel, queue
    for name in topology_queue_names(queue, FAST.tiers_ms):
        channel.queue_delete(name)
    connection.close()


def consume_until(
    connection: pika.BlockingConnection,
    channel: Any,
    queue: str,
    callback: Callable[..., Any],
    done: Callable[[], bool],
    timeout: float = 15.0,
) -> None:
    channel.basic_qos(prefetch_count=5)
    tag = channel.basic_consume(queue, callback)
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not done():
            assert not deadline.is_set(), "timed out waiting for the consumer"
            connection.process_data_events(time_limit=0.1)
    finally:
        timer.cancel()
        channel.basic_cancel(tag)


def chain(store: StoreThread, task_id: str) -> list[TaskTracker]:
    return store.call(TaskTracker.find_retry_chain(task_id))


def depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def test_a_wrapped_callback_completes_once_and_its_own_ack_is_not_sent_twice(
    store: StoreThread, channel: tuple[pika.BlockingConnection, Any, str], amqp_url: str
) -> None:
    # Given: an existing callback that acks its own delivery
    connection, ch, queue = channel
    calls: list[bytes] = []
    recorder = RecordingMiddleware()

    @tracked_callback(queue, store=store, retry_policy=FAST, middleware=(recorder,))
    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> str:
        calls.append(body)
        channel.basic_ack(method.delivery_tag)
        return "written"

    with SyncPublisher(amqp_url, store=store) as pub:
        result = pub.enqueue(queue, {"report": 1}, task_id="pika:1")
        again = pub.enqueue(queue, {"report": 1}, task_id="pika:1")
    # When
    consume_until(connection, ch, queue, on_message, lambda: recorder.outcomes["completed"] == 1)
    # Then
    assert again.deduplicated
    assert calls == [b'{"report":1}']
    assert [(d.execution_id, d.status, d.result) for d in chain(store, "pika:1")] == [
        (result.execution_id, TaskStatus.COMPLETED, "written")
    ]
    connection.process_data_events(time_limit=0.2)
    assert ch.is_open
    assert depth(ch, queue) == 0


def test_duplicates_are_skipped_and_a_nack_becomes_a_retry(
    store: StoreThread, channel: tuple[pika.BlockingConnection, Any, str], amqp_url: str
) -> None:
    # Given: five copies of one message; the first attempt nacks (transient)
    connection, ch, queue = channel
    attempts: list[int] = []
    recorder = RecordingMiddleware()

    @tracked_callback(queue, store=store, retry_policy=FAST, middleware=(recorder,))
    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        attempts.append(int(properties.headers["x-retry-count"]))
        if len(attempts) == 1:
            channel.basic_nack(method.delivery_tag, requeue=True)

    with SyncPublisher(amqp_url, store=store) as pub:
        result = pub.enqueue(queue, {}, task_id="pika:2")
    copy = pika.BasicProperties(
        message_id=result.execution_id,
        correlation_id=result.task_id,
        headers={HEADER_TASK_ID: result.task_id, HEADER_EXECUTION_ID: result.execution_id},
    )
    for _ in range(4):
        ch.basic_publish("", queue, b"{}", copy)
    # When
    consume_until(connection, ch, queue, on_message, lambda: recorder.outcomes["completed"] == 1)
    # Then
    assert attempts == [0, 1]
    assert recorder.counts["on_duplicate"] == 4
    assert [(d.status, d.retry_count) for d in chain(store, "pika:2")] == [
        (TaskStatus.FAILED, 0),
        (TaskStatus.COMPLETED, 1),
    ]


def test_a_validation_error_is_dead_lettered(
    store: StoreThread, channel: tuple[pika.BlockingConnection, Any, str], amqp_url: str
) -> None:
    connection, ch, queue = channel
    recorder = RecordingMiddleware()

    @tracked_callback(queue, store=store, retry_policy=FAST, middleware=(recorder,))
    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        raise KeyError("customer_id")

    with SyncPublisher(amqp_url, store=store) as pub:
        pub.enqueue(queue, {}, task_id="pika:3")
    consume_until(
        connection, ch, queue, on_message, lambda: recorder.outcomes["dead_lettered"] == 1
    )
    [dead] = chain(store, "pika:3")
    assert dead.status is TaskStatus.DLQ
    assert dead.error_message == "KeyError: 'customer_id'"
    assert depth(ch, dlq_name(queue)) == 0  # the dead letter is in MongoDB, not copied
