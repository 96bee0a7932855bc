from __future__ import annotations

import uuid

import pytest

import tracker
from tests.rabbit import Broker
from tracker import TaskTracker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


async def test_the_message_carries_the_contract(broker: Broker) -> None:
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        result = await pub.enqueue(queue, {"month": 11}, task_id="reports:nov", max_retries=4)
    incoming = await (await broker.channel.get_queue(queue)).get(timeout=5)
    await incoming.ack()
    assert incoming.message_id == result.execution_id
    assert incoming.correlation_id == "reports:nov"
    assert incoming.delivery_mode == 2
    assert incoming.body == b'{"month":11}'
    assert incoming.headers["x-task-id"] == "reports:nov"
    assert incoming.headers["x-execution-id"] == result.execution_id
    assert incoming.headers["x-retry-count"] == 0
    assert incoming.headers["x-message-version"] == "1.0"
    assert incoming.headers["x-max-retries"] == 4


async def test_a_refused_publish_rolls_the_execution_back(broker: Broker) -> None:
    # Given: a queue of that name exists with other arguments, so the broker refuses it
    queue = f"test-conflict-{uuid.uuid4().hex[:8]}"
    broker.queues.append(queue)
    await broker.channel.declare_queue(queue, durable=False, auto_delete=True)
    # When
    async with tracker.Publisher(broker.url) as pub:
        with pytest.raises(tracker.PublishError, match="rolled back, enqueueing again is safe"):
            await pub.enqueue(queue, {}, task_id="reports:refused")
    # Then: no execution is left queued without a message
    assert await TaskTracker.find({"taskId": "reports:refused"}).to_list() == []


async def test_bad_payloads_are_refused_before_anything_is_written(broker: Broker) -> None:
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url, max_payload_bytes=100) as pub:
        with pytest.raises(tracker.ConfigurationError, match="over the 100-byte limit"):
            await pub.enqueue(queue, {"x": "y" * 200})
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await pub.enqueue(queue, {"x": object()})
        with pytest.raises(tracker.ConfigurationError, match="reserved"):
            await pub.enqueue(f"{queue}.dlq", {})
    assert await TaskTracker.find({"queueName": queue}).to_list() == []
