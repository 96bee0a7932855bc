"""``Publisher``: create a tracked execution and publish its message, confirmed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from tracker import db
from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.consumer import validate_queue_name
from tracker.envelope import task_message
from tracker.errors import PublishError
from tracker.middleware import Middleware, run_hooks
from tracker.models import TaskStatus
from tracker.rabbit.amqp import publish
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT, declare_work_queue
from tracker.store import create_execution, encode_payload

log = structlog.get_logger("tracker.publisher")


@dataclass(frozen=True)
class EnqueueResult:
    """``deduplicated``: the task already had an active execution (or a completion within
    the dedupe window); nothing was published and ``execution_id`` is that execution's."""

    task_id: str
    execution_id: str
    deduplicated: bool
    status: TaskStatus


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
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

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
        validate_queue_name(queue)
        db.collection()  # fail before publishing anything if the store is not connected
        body = encode_payload(payload, self.max_payload_bytes)
        task_id = task_id or f"{queue}:{uuid.uuid4()}"
        created = await create_execution(
            task_id,
            queue,
            payload,
            metadata=metadata,
            max_retries=max_retries,
            dedupe_window=dedupe_window,
        )
        execution = created.execution
        await run_hooks(self.middleware, "on_enqueued", queue, execution, created.deduplicated)
        result = EnqueueResult(
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            deduplicated=created.deduplicated,
            status=execution.status,
        )
        if created.deduplicated:
            log.info("enqueue deduplicated", task_id=task_id, execution_id=execution.execution_id)
            return result
        message = task_message(
            queue,
            body,
            task_id=task_id,
            execution_id=execution.execution_id,
            max_retries=max_retries,
        )
        try:
            if queue not in self._declared:
                await declare_work_queue(self.channel, queue, self.delivery_limit)
                self._declared.add(queue)
            await publish(self.channel, message)
        except Exception as exc:
            await db.collection().delete_one(
                {"executionId": execution.execution_id, "status": TaskStatus.QUEUED.value}
            )
            raise PublishError(
                f"the broker did not accept the message for {queue!r} ({exc}); the execution "
                f"{execution.execution_id} was rolled back, enqueueing again is safe"
            ) from exc
        log.debug("enqueued", queue=queue, task_id=task_id, execution_id=execution.execution_id)
        return result
