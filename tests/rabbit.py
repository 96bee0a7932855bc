"""A test's view of the broker: unique queue names, raw publishing, queue depths, cleanup."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import TracebackType
from typing import Any

import aio_pika
import aiormq
import pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from tracker import RetryPolicy, TaskTracker
from tracker.constants import dlq_name
from tracker.rabbit.topology import declare_topology, topology_queue_names

FAST = RetryPolicy(initial_delay=0.2, multiplier=2, jitter=0, tiers=(0.2, 0.4))
# Consumer timeouts used by the tests: their deadline queues are deleted after each test.
TEST_TIMEOUTS_MS = (300_000, 60_000, 1_000, 2_000, 500)


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> Broker:
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._connection.channel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        channel = await self.connection.channel()
        for name in self.queues:
            names = {
                *topology_queue_names(name, RetryPolicy().tiers_ms),
                *(
                    n
                    for ms in TEST_TIMEOUTS_MS
                    for n in topology_queue_names(name, FAST.tiers_ms, ms)
                ),
            }
            for queue in names:
                await channel.queue_delete(queue)
        await self.connection.close()

    @property
    def connection(self) -> AbstractRobustConnection:
        assert self._connection is not None
        return self._connection

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    async def new_queue(self, policy: RetryPolicy = FAST) -> str:
        """A fresh queue name with its topology declared, deleted after the test."""
        name = f"test-{uuid.uuid4().hex[:10]}"
        self.queues.append(name)
        await declare_topology(self.channel, name, policy.tiers_ms)
        return name

    async def publish_raw(
        self,
        queue: str,
        body: bytes | Any,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish exactly these properties, as any AMQP client could (aio-pika's own
        Message would add a message_id)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        properties = aiormq.spec.Basic.Properties(
            headers=headers or {},
            message_id=message_id,
            correlation_id=correlation_id,
            delivery_mode=2,
        )
        async with asyncio.timeout(15):
            while True:  # the helper's own robust channel may be reconnecting
                try:
                    underlay = await self.channel.get_underlay_channel()
                    await underlay.basic_publish(raw, routing_key=queue, properties=properties)
                    return
                except (aiormq.exceptions.AMQPError, RuntimeError):
                    await asyncio.sleep(0.2)

    async def publish_without_ids(self, queue: str, body: bytes) -> None:
        """Publish with no message_id at all: aiormq always adds one, pika does not."""

        def send() -> None:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            try:
                connection.channel().basic_publish("", queue, body)
            finally:
                connection.close()

        await asyncio.to_thread(send)

    async def depth(self, queue: str) -> int:
        # aio-pika's robust channel answers a passive declare from its cache; ask the broker
        # (the helper's own channel may be reconnecting after a test dropped connections).
        async with asyncio.timeout(15):
            while True:
                try:
                    underlay = await self.channel.get_underlay_channel()
                    declared = await underlay.queue_declare(queue, passive=True)
                    return int(declared.message_count or 0)
                except (aiormq.exceptions.ChannelInvalidStateError, RuntimeError):
                    await asyncio.sleep(0.2)

    async def exists(self, queue: str) -> bool:
        """Whether the broker has ``queue`` (asked on a throwaway channel: a passive declare
        of a missing queue closes its channel)."""
        channel = await self.connection.channel()
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()
        return True

    async def dlq_depth(self, queue: str) -> int:
        return await self.depth(dlq_name(queue))

    async def wait_depth(self, queue: str, expected: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.depth(queue) != expected:
                await asyncio.sleep(0.05)


async def wait_status(task_id: str, *statuses: str, timeout: float = 15.0) -> list[TaskTracker]:
    """Poll until the task's retry chain ends in one of ``statuses``; return the chain."""
    async with asyncio.timeout(timeout):
        while True:
            chain = await TaskTracker.find_retry_chain(task_id)
            if chain and chain[-1].status.value in statuses:
                return chain
            await asyncio.sleep(0.05)
