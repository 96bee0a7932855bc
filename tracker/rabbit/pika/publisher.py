"""``SyncPublisher``: the asyncio ``Publisher``'s contract from synchronous code, on pika."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import pika
import structlog

from tracker.constants import DEFAULT_AMQP_URL, MAX_PAYLOAD_BYTES
from tracker.enqueue import Enqueuer, EnqueueResult
from tracker.errors import PublishError
from tracker.middleware import Middleware
from tracker.rabbit.pika.bridge import StoreThread
from tracker.rabbit.pika.nodes import PikaNodes
from tracker.rabbit.pika.transport import PikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT

log = structlog.get_logger("tracker.publisher")
# Rounds over the nodes before giving up on connecting (each node tried once a round).
CONNECT_ROUNDS = 3


class SyncPublisher:
    """``with SyncPublisher(amqp_url, store=store) as pub: pub.enqueue("reports", payload)``:
    the asyncio ``Publisher``'s enqueue (deduplication, middleware hooks, metrics among them,
    and what a failed publish leaves), run on the store's thread while this thread, which
    owns the pika connection, carries out the publishes.

    ``amqp_url`` may list several nodes of a cluster, comma-separated: it connects to the
    first that answers, and an ``enqueue`` that finds the connection lost connects to the
    next (``PikaNodes``); an enqueue whose node goes while it publishes publishes again on
    the next node, once."""

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
        self.nodes = PikaNodes(self.amqp_url)
        self._session: _Session | None = None

    def __enter__(self) -> SyncPublisher:
        self._session = self._connect()
        return self

    def _connect(self) -> _Session:
        connection = self.nodes.connect(rounds=CONNECT_ROUNDS)
        transport = PikaTransport(
            connection.channel(),
            self.store,
            delivery_limit=self.delivery_limit,
            quorum_group_size=self.quorum_group_size,
        )
        return _Session(
            connection, transport, Enqueuer(transport, self.middleware, self.max_payload_bytes)
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None and session.connection.is_open:
            session.connection.close()

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
        session = self._session
        if session is None:
            raise PublishError("the publisher is not open: use `with SyncPublisher(...)`")
        if not session.connection.is_open:
            log.warning("broker connection lost: connecting to the next node", node=self.node)
            session = self._session = self._connect()
        try:
            return self._run(
                session,
                session.enqueuer.enqueue(
                    queue, payload, task_id, metadata, max_retries, dedupe_window
                ),
            )
        except PublishError as failed:
            # Lost with its node: on the next node, publish it again, once (a copy that did
            # arrive is a duplicate delivery, skipped).
            if session.connection.is_open or not failed.maybe_published or not failed.task_id:
                raise
            log.warning("broker node lost while publishing: again on the next", node=self.node)
            session = self._session = self._connect()
            return self._run(
                session,
                session.enqueuer.enqueue_again(
                    failed, queue, payload, metadata, max_retries, dedupe_window
                ),
            )

    def _run(self, session: _Session, enqueue: Coroutine[Any, Any, EnqueueResult]) -> EnqueueResult:
        """``enqueue`` on the store's thread while this thread serves the connection."""
        done = self.store.submit(enqueue)
        session.transport.bridge.serve_until(done, session.connection)
        return done.result()

    @property
    def node(self) -> str | None:
        """The node connected to (``host:port``)."""
        return self.nodes.current_node


@dataclass(frozen=True)
class _Session:
    """One connection to a node, with what publishes on it."""

    connection: pika.BlockingConnection
    transport: PikaTransport
    enqueuer: Enqueuer
