"""Consuming deliveries as aiormq reads them (``tracker.rabbit.consuming``): the fast path
is taken, survives every recovery aio-pika makes, and reads a delivery exactly as aio-pika's
``IncomingMessage`` does."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import pytest
from aio_pika import Queue
from aio_pika.message import IncomingMessage
from aiormq.abc import DeliveredMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.header import ContentHeader

import tracker
from tests.broker_nodes import PrivateNode
from tests.rabbit import Broker, wait_status
from tracker import TaskContext
from tracker.rabbit.consuming import AnyDelivery, Deliveries, DeliveryQueue, delivery_fields
from tracker.rabbit.failover import FailoverConnection, connect_failover

pytest_plugins = ("tests.conftest_broker_nodes",)


class Received:
    """Deliveries a ``Deliveries`` callback got, each acked at once."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[AnyDelivery] = asyncio.Queue()

    async def __call__(self, message: AnyDelivery) -> None:
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        await self.messages.put(message)

    async def next(self) -> AnyDelivery:
        return await asyncio.wait_for(self.messages.get(), timeout=15)


async def _consuming(url: str, received: Received) -> tuple[FailoverConnection, DeliveryQueue]:
    connection = await connect_failover(url, timeout=5)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"test-consuming-{uuid.uuid4().hex[:8]}", durable=True)
    assert isinstance(queue, DeliveryQueue)
    await queue.consume(Deliveries(received))
    return connection, queue


async def _publish(url: str, queue: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    finally:
        await connection.close()


async def test_a_delivery_queue_hands_over_what_aiormq_read(amqp_url: str) -> None:
    # Given
    received = Received()
    connection, queue = await _consuming(amqp_url, received)
    try:
        # When
        await _publish(amqp_url, queue.name, b"one")
        # Then: no IncomingMessage was made for it
        message = await received.next()
        assert type(message) is DeliveredMessage
        assert message.body == b"one"
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()


async def test_a_consumer_restored_by_the_base_queue_gets_aio_pikas_messages(
    amqp_url: str,
) -> None:
    # Given: the consumer registered as aio-pika's recovery of a missing consumer does it
    received = Received()
    connection = await connect_failover(amqp_url, timeout=5)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"test-consuming-{uuid.uuid4().hex[:8]}", durable=True)
    try:
        assert isinstance(queue, Queue)
        await Queue.consume(queue, Deliveries(received))
        # When
        await _publish(amqp_url, queue.name, b"two")
        # Then: an IncomingMessage, which Deliveries takes too
        message = await received.next()
        assert isinstance(message, IncomingMessage)
        assert message.body == b"two"
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()


async def test_a_lost_connection_restores_the_fast_consumer(private_node: PrivateNode) -> None:
    # Given: a consumer on a private node, which has received one delivery
    received = Received()
    connection, queue = await _consuming(private_node.url, received)
    try:
        await _publish(private_node.url, queue.name, b"before")
        assert (await received.next()).body == b"before"

        # When: the node closes every connection
        private_node.close_connections("fault test")
        await asyncio.sleep(0.5)
        await asyncio.wait_for(connection.connected.wait(), timeout=30)

        # Then: the consumer is back, still taking aiormq's deliveries
        await _publish(private_node.url, queue.name, b"after")
        message = await received.next()
        assert message.body == b"after"
        assert type(message) is DeliveredMessage
    finally:
        await connection.close()


@pytest.mark.usefixtures("store")
async def test_a_work_queue_deleted_under_a_worker_comes_back_and_is_consumed(
    broker: Broker,
) -> None:
    # Given: a worker consuming a queue
    queue = await broker.new_queue()

    @tracker.tracked(queue)
    async def handle(task: TaskContext) -> None:
        return None

    worker = tracker.Worker([handle], broker.url, sweep_interval=None, stats_interval=None)
    await worker.start()
    try:
        # When: an operator deletes the queue (the broker cancels the consumer)
        await broker.channel.queue_delete(queue)

        # Then: the worker declares it again and consumes what is enqueued to it (nobody
        # else declares it meanwhile: RabbitMQ may not cancel a consumer of a queue that is
        # declared again at once)
        async with asyncio.timeout(15):
            while not await broker.exists(queue):
                await asyncio.sleep(0.1)
        async with tracker.Publisher(broker.url) as publisher:
            result = await publisher.enqueue(queue, {"n": 1})
        await wait_status(result.task_id, "completed", timeout=15)
    finally:
        await worker.stop()


HEADER_VALUES = st.one_of(
    st.text(max_size=20), st.integers(-(2**31), 2**31 - 1), st.booleans(), st.none()
)


@settings(max_examples=100, deadline=None)
@given(
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=10), HEADER_VALUES),
    message_id=st.none() | st.text(max_size=40),
    correlation_id=st.none() | st.text(max_size=40),
    redelivered=st.booleans(),
    body=st.binary(max_size=64),
)
def test_a_delivery_reads_the_same_as_aio_pikas_message_of_it(
    headers: dict[str, Any] | None,
    message_id: str | None,
    correlation_id: str | None,
    redelivered: bool,
    body: bytes,
) -> None:
    # Given: one delivery, as aiormq reads it and as aio-pika hands it over
    class Channel:
        is_closed = False

    properties = spec.Basic.Properties(
        headers=headers, message_id=message_id, correlation_id=correlation_id
    )
    delivered = DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="c", delivery_tag=7, redelivered=redelivered, routing_key="q"
        ),
        header=ContentHeader(body_size=len(body), properties=properties),
        body=body,
        channel=Channel(),  # type: ignore[arg-type]
    )
    # When / Then
    assert delivery_fields(delivered) == delivery_fields(IncomingMessage(delivered))
