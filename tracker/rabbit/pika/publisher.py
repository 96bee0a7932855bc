"""``SyncPublisher``: the asyncio ``Publisher``'s contract from synchronous code, on pika."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from tracker import enqueue
from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.pika.bridge import StoreThread
from tracker.rabbit.pika.transport import declare_specs, publish
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT, work_queue_specs


class SyncPublisher:
    """``with SyncPublisher(amqp_url, store=store) as pub: pub.enqueue("reports", payload)``:
    the same deduplication, middleware hooks (metrics among them) and rollback as the asyncio
    ``Publisher``."""

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        store: StoreThread,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: tuple[Middleware, ...] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.amqp_url = amqp_url or DEFAULT_AMQP_URL
        self.store = store
        self.delivery_limit = delivery_limit
        self.middleware = middleware
        self.max_payload_bytes = max_payload_bytes
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()

    def __enter__(self) -> SyncPublisher:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = self._channel = None

    def enqueue(
        self,
        queue: str,
        payload: Any,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_retries: int | None = None,
        *,
        dedupe_window: float | timedelta | None = None,
    ) -> EnqueueResult:
        if self._channel is None:
            raise PublishError("the publisher is not open: use `with SyncPublisher(...)`")
        result, message = self.store.call(
            enqueue.prepare(
                queue,
                payload,
                task_id,
                metadata,
                max_retries,
                dedupe_window,
                max_payload_bytes=self.max_payload_bytes,
                middleware=self.middleware,
            )
        )
        if message is None:
            return result
        try:
            if queue not in self._declared:
                declare_specs(self._channel, work_queue_specs(queue, self.delivery_limit))
                self._declared.add(queue)
            publish(self._channel, message)
        except Exception as exc:
            raise self.store.call(enqueue.roll_back(queue, result, exc)) from exc
        return result
