"""``Publisher``: create a tracked execution and publish its message, confirmed (aio-pika)."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any

from tracker import enqueue
from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT


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
        self.transport = AioPikaTransport(
            amqp_url or DEFAULT_AMQP_URL, delivery_limit=delivery_limit
        )
        self.amqp_url = self.transport.url
        self.delivery_limit = delivery_limit
        self.middleware = middleware
        self.max_payload_bytes = max_payload_bytes
        self._declared: set[str] = set()
        self._opened = False

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
        await self.transport.open()
        self._opened = True

    async def close(self) -> None:
        self._opened = False
        await self.transport.close()

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
        if not self._opened:
            raise PublishError("the publisher is not open: use `async with Publisher(...)`")
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
                await self.transport.declare_work_queue(queue)
                self._declared.add(queue)
            await self.transport.publish(message)
        except Exception as exc:
            raise await enqueue.roll_back(queue, result, exc) from exc
        return result
