"""``Publisher``: create a tracked execution and publish its message, confirmed (aio-pika)."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any

import structlog

from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import Enqueuer, EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT

log = structlog.get_logger("tracker.publisher")
# How long an enqueue whose publish was lost waits for the connection to come back.
RECONNECT_WAIT = 30.0


class Publisher:
    """``async with Publisher(amqp_url) as pub: await pub.enqueue("reports", payload)``.

    Each enqueue creates the task's execution in MongoDB (or finds its active one:
    ``deduplicated``), then publishes its message and waits for the broker's confirm. What a
    failed publish leaves behind is ``tracker.enqueue.Enqueuer``'s to say; a crash between
    the write and the publish leaves a queued execution that the sweeper publishes (see
    docs/crash-points.md). A publish not confirmed (its node lost, say) is published again
    once, as soon as the connection is back (on the next node of ``amqp_url``).
    """

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: tuple[Middleware, ...] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        quorum_group_size: int | None = None,
    ) -> None:
        self.transport = AioPikaTransport(
            amqp_url or DEFAULT_AMQP_URL,
            delivery_limit=delivery_limit,
            quorum_group_size=quorum_group_size,
        )
        self.amqp_url = self.transport.url
        self.delivery_limit = delivery_limit
        self.middleware = middleware
        self.max_payload_bytes = max_payload_bytes
        self._enqueuer = Enqueuer(self.transport, middleware, max_payload_bytes)
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
        try:
            return await self._enqueuer.enqueue(
                queue, payload, task_id, metadata, max_retries, dedupe_window
            )
        except PublishError as failed:
            # Maybe lost with its node: once connected (to the next node), publish it again,
            # once; a copy that did arrive is a duplicate delivery, skipped.
            if not failed.maybe_published or failed.task_id is None:
                raise
            if not await self.transport.wait_open(RECONNECT_WAIT):
                raise
            log.warning(
                "publish not confirmed: publishing again",
                task_id=failed.task_id,
                node=self.transport.node,
            )
            return await self._enqueuer.enqueue_again(
                failed, queue, payload, metadata, max_retries, dedupe_window
            )
