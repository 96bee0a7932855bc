"""``SyncPublisher``: the asyncio ``Publisher``'s contract from synchronous code, on pika."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any

import pika

from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import Enqueuer, EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.pika.bridge import StoreThread
from tracker.rabbit.pika.transport import PikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT


class SyncPublisher:
    """``with SyncPublisher(amqp_url, store=store) as pub: pub.enqueue("reports", payload)``:
    the asyncio ``Publisher``'s enqueue (deduplication, middleware hooks, metrics among them,
    and what a failed publish leaves), run on the store's thread while this thread, which
    owns the pika connection, carries out the publishes."""

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        store: StoreThread,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: tuple[Middleware, ...] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        quorum_group_size: int | None = None,
    ) -> None:
        self.amqp_url = amqp_url or DEFAULT_AMQP_URL
        self.store = store
        self.delivery_limit = delivery_limit
        self.quorum_group_size = quorum_group_size
        self.middleware = middleware
        self.max_payload_bytes = max_payload_bytes
        self._connection: pika.BlockingConnection | None = None
        self._enqueuer: Enqueuer | None = None
        self._transport: PikaTransport | None = None

    def __enter__(self) -> SyncPublisher:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = self._connection.channel()
        self._transport = PikaTransport(
            channel,
            self.store,
            delivery_limit=self.delivery_limit,
            quorum_group_size=self.quorum_group_size,
        )
        self._enqueuer = Enqueuer(self._transport, self.middleware, self.max_payload_bytes)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = None
        self._enqueuer = self._transport = None

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
        if self._enqueuer is None or self._transport is None or self._connection is None:
            raise PublishError("the publisher is not open: use `with SyncPublisher(...)`")
        done = self.store.submit(
            self._enqueuer.enqueue(queue, payload, task_id, metadata, max_retries, dedupe_window)
        )
        self._transport.bridge.serve_until(done, self._connection)
        return done.result()
