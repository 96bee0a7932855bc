"""``Publisher``: create a tracked execution and publish its message, confirmed (aio-pika)."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from tracker import enqueue
from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.amqp import confirming_channel, publish
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT, declare_work_queue


class Publisher:
    """``async with Publisher(amqp_url) as pub: await pub.enqueue("reports", payload)``.

    If the broker does not confirm a message, the execution written for it is removed again
    (it is still queued, so nothing has run) and ``PublishError`` is raised: enqueueing again
    is safe. A crash between the write and the publish leaves a queued execution with no
    message; the sweeper republishes such executions (see docs/crash-points.md).
    """

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: tuple[Middleware, ...] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.amqp_url = amqp_url or DEFAULT_AMQP_URL
        self.delivery_limit = delivery_limit
        self.middleware = middleware
        self.max_payload_bytes = max_payload_bytes
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()

    async def __aenter__(self) -> Publisher:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await confirming_channel(self._connection)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise PublishError("the publisher is not open: use `async with Publisher(...)`")
        return self._channel

    async def enqueue(
        self,
        queue: str,
        payload: Any,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_retries: int | None = None,
        *,
        dedupe_window: float | timedelta | None = None,
    ) -> EnqueueResult:
        """Track a new execution of ``task_id`` (default: a new id under ``queue``) and
        publish it to ``queue``, unless the task already has an active execution."""
        channel = self.channel
        result, message = await enqueue.prepare(
            queue,
            payload,
            task_id,
            metadata,
            max_retries,
            dedupe_window,
            max_payload_bytes=self.max_payload_bytes,
            middleware=self.middleware,
        )
        if message is None:
            return result
        try:
            if queue not in self._declared:
                await declare_work_queue(channel, queue, self.delivery_limit)
                self._declared.add(queue)
            await publish(channel, message)
        except Exception as exc:
            raise await enqueue.roll_back(queue, result, exc) from exc
        return result
