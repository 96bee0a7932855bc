"""The service, put together in one transport-neutral place: tracked consumers on a
``Transport``, each with its deadline listener, plus the sweeper, the queue-statistics
collector and the HTTP endpoint, all from one ``ServiceOptions``.

``tracker serve`` builds it from the settings read at the edge; ``tracker.Worker`` is this
over the aio-pika transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter

from tracker.api_tokens import ApiToken
from tracker.constants import timeouts_queue_name
from tracker.consumer import TrackedConsumer
from tracker.delivery.processor import Processor, ProcessorOptions
from tracker.delivery.settle import handle
from tracker.errors import ConfigurationError, HandlerInterrupt
from tracker.middleware import Middleware
from tracker.observability import MetricsMiddleware, QueueStatsCollector, TrackerMetrics
from tracker.operations.replays import ReplayRunner
from tracker.service.cancelling import cancel_and_wait
from tracker.service.deadlines import DeadlineListener, DeadlineMiddleware
from tracker.service.memory import freeze_startup_objects
from tracker.service.sweeper import Sweeper
from tracker.store import connection
from tracker.transport import Delivery, OnDelivery, Subscription, Transport
from tracker.validation import check_id
from tracker.web.access import Access
from tracker.web.app import create_app
from tracker.web.context import Operator
from tracker.web.health import Health
from tracker.web.server import HttpServer

log = structlog.get_logger("tracker.service")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ServiceOptions:
    """How the service runs. ``concurrency``: deliveries in flight per queue;
    ``shutdown_timeout``: how long in-flight handlers may finish on stop; ``lease``,
    ``requeue_delay``, ``store_retry_budget``, ``timeout_grace``: see ``ProcessorOptions``;
    ``stats_interval``/``sweep_interval``: seconds between background runs (None: off);
    ``http_port`` (None: no endpoint, 0: any free port) and ``http_host``; the endpoint
    serves the API and the console with ``api_tokens`` and ``redact_fields`` (see
    ``tracker.api_tokens``); ``freeze_startup_objects``: once started, hide what start-up
    made from the cyclic garbage collector (``tracker.service.memory``)."""

    concurrency: int = 10
    shutdown_timeout: float = 30.0
    lease: float = 30.0
    requeue_delay: float = 1.0
    store_retry_budget: float = 10.0
    timeout_grace: float = 5.0
    stats_interval: float | None = 15.0
    sweep_interval: float | None = 60.0
    stuck_grace: float = 30.0
    republish_after: float = 600.0
    # Seconds between looks for replay jobs to run (None: this service runs none).
    replay_interval: float | None = 2.0
    http_port: int | None = None
    http_host: str = "127.0.0.1"
    worker_id: str | None = None
    api_tokens: tuple[ApiToken, ...] = ()
    redact_fields: frozenset[str] = frozenset()
    freeze_startup_objects: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if self.worker_id is not None:
            check_id(self.worker_id, "worker_id")
            if self.worker_id.startswith("$"):
                raise ValueError("worker_id must not start with '$'")


class Service:
    """Consume the queues of ``consumers`` on ``transport`` and run what keeps them healthy.

    ``start()`` declares each queue's topology and consumes it; ``stop()`` stops gracefully:
    no new deliveries, in-flight handlers get ``shutdown_timeout`` seconds to finish, the rest
    are cancelled and their deliveries left unacked for redelivery, their claims released.
    ``routers``: the consumers' own API routes, served under ``/api/v1`` with the API's
    access rules (when the options give an HTTP port).
    """

    def __init__(
        self,
        consumers: Iterable[TrackedConsumer],
        transport: Transport,
        options: ServiceOptions | None = None,
        *,
        middleware: Iterable[Middleware] = (),
        metrics: TrackerMetrics | None = None,
        routers: Iterable[APIRouter] = (),
    ) -> None:
        self.consumers = list(consumers)
        if not self.consumers:
            raise ConfigurationError("a Worker needs at least one @tracked consumer")
        queues = [c.queue for c in self.consumers]
        if len(set(queues)) != len(queues):
            raise ConfigurationError(f"two consumers for one queue: {sorted(queues)}")
        self.options = options = options or ServiceOptions()
        self.transport = transport
        self.worker_id = options.worker_id or default_worker_id()
        self.metrics = metrics if metrics is not None else TrackerMetrics()
        self.middleware = (
            MetricsMiddleware(self.metrics, {c.queue: c.name for c in self.consumers}),
            *middleware,
            DeadlineMiddleware(
                lambda: self.transport if self._running else None,
                {c.queue: c.timeout for c in self.consumers},
            ),
        )
        processor_options = ProcessorOptions(
            worker_id=self.worker_id,
            lease=options.lease,
            requeue_delay=options.requeue_delay,
            store_retry_budget=options.store_retry_budget,
            timeout_grace=options.timeout_grace,
        )
        self.processors = {
            c.queue: Processor(c, processor_options, self.middleware) for c in self.consumers
        }
        self.collector = QueueStatsCollector(
            self.metrics, {c.queue: c.timeout for c in self.consumers}, options.stats_interval or 15
        )
        self.sweeper = Sweeper(
            {queue: p.outcomes for queue, p in self.processors.items()},
            self.transport.publish,
            interval=options.sweep_interval or 60.0,
            stuck_grace=options.stuck_grace,
            republish_after=options.republish_after,
        )
        self.replays = ReplayRunner(
            self.transport.publish, owner=self.worker_id, interval=options.replay_interval or 2.0
        )
        self.health = Health(
            {"mongodb": connection.ping, "rabbitmq": self._broker_connected},
            details=self._broker_details,
        )
        # The API and the console publish on the service's own transport.
        self.operator = Operator(
            Access(options.api_tokens, options.http_host),
            options.redact_fields,
            transport=transport,
            service=True,
            # What reads a broker queue itself (the dlq import) connects to the same broker.
            amqp_url=getattr(transport, "url", None),
        )
        self.http_server = (
            None
            if options.http_port is None
            else HttpServer(
                create_app(
                    self.metrics.registry, self.health, operator=self.operator, api_routers=routers
                ),
                host=options.http_host,
                port=options.http_port,
            )
        )
        self._running = False
        # Ready: every queue declared and consumed, so /healthz answers 200 only then (a
        # message published on a 200 finds its queue).
        self._consuming = False
        self._subscriptions: list[Subscription] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        # Set when a handler raised KeyboardInterrupt/SystemExit: the service stops.
        self.interrupted: HandlerInterrupt | None = None

    async def start(self) -> None:
        """Start, or fail with nothing left running: the indexes are checked and the HTTP
        port bound before anything consumes."""
        connection.require_indexes()
        if self.http_server is not None:
            await self.http_server.start()
        try:
            await self._start_consuming()
        except BaseException:
            await self._close()
            raise
        if self.options.freeze_startup_objects:
            freeze_startup_objects()
        log.info(
            "worker started",
            worker_id=self.worker_id,
            queues=[c.queue for c in self.consumers],
            concurrency=self.options.concurrency,
            broker=self.transport.node,
        )

    async def _start_consuming(self) -> None:
        self.transport.on_failover = self._failed_over
        await self.transport.open()
        self.metrics.connected_to(self.transport.node)
        self._running = True
        connection.mark_consumed_here()
        for consumer in self.consumers:
            processor = self.processors[consumer.queue]
            await self.transport.declare(consumer)
            listener = DeadlineListener(
                processor.outcomes, self.transport, self.options.requeue_delay
            )
            for queue, on_delivery in (
                (consumer.queue, self._on_work(processor)),
                (timeouts_queue_name(consumer.queue), self._spawning(listener.on_delivery)),
            ):
                self._subscriptions.append(await self.transport.consume(queue, on_delivery))
        self._consuming = True
        if self.options.stats_interval is not None:
            self.collector.start()
        if self.options.sweep_interval is not None:
            self.sweeper.start()
        if self.options.replay_interval is not None:
            self.replays.start()

    async def run_forever(self) -> None:
        """Wait until ``stop()`` is called (from a signal handler, say). Raises
        ``HandlerInterrupt`` when the service stopped because a handler raised
        ``KeyboardInterrupt`` or ``SystemExit`` (its ``exit_code`` is for the process)."""
        await self._stopped.wait()
        if self.interrupted is not None:
            raise self.interrupted

    async def stop(self) -> None:
        """Stop consuming, let in-flight handlers finish within ``shutdown_timeout``, cancel
        the rest (their deliveries return to the queue), close the connection."""
        if not self._running:
            return
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.cancel()
        if self._in_flight:
            _, pending = await asyncio.wait(
                set(self._in_flight), timeout=self.options.shutdown_timeout
            )
            if pending:
                log.warning("cancelling unfinished handlers", count=len(pending))
                await cancel_and_wait(pending)
        await self._close()
        log.info("worker stopped", worker_id=self.worker_id)

    async def abort(self) -> None:
        """Stop at once, as a crash would: the connection closes first, so nothing more is
        acked, and in-flight handlers are cancelled without releasing their claims."""
        if not self._running:
            return
        for processor in self.processors.values():
            processor.release_on_cancel = False
        await self._close()
        await cancel_and_wait(set(self._in_flight))

    async def _broker_connected(self) -> bool:
        return self._running and self._consuming and self.transport.is_open

    def _broker_details(self) -> dict[str, Any]:
        return {"broker": {"node": self.transport.node if self._running else None}}

    def _failed_over(self, from_node: str, to_node: str) -> None:
        self.metrics.broker_failovers.inc()
        self.metrics.connected_to(to_node)

    async def _close(self) -> None:
        self._running = False
        self._consuming = False
        await self.collector.stop()
        await self.sweeper.stop()
        await self.replays.stop()
        if self.http_server is not None:
            await self.http_server.stop()
        self._subscriptions.clear()
        with contextlib.suppress(Exception):
            await self.transport.close()
        self._stopped.set()

    def _on_work(self, processor: Processor) -> OnDelivery:
        async def on_delivery(delivery: Delivery) -> None:
            decision = await handle(processor, delivery, self.transport)
            if decision.interrupt is not None and self.interrupted is None:
                self.interrupted = decision.interrupt
                log.error(
                    "a handler interrupted the worker: stopping", error=str(decision.interrupt)
                )
                self._stopping = asyncio.create_task(self.stop())

        return self._spawning(on_delivery)

    def _spawning(self, on_delivery: OnDelivery) -> OnDelivery:
        """Run each delivery as its own task, tracked so that stopping can wait for it."""

        async def spawn(delivery: Delivery) -> None:
            task = asyncio.create_task(on_delivery(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        return spawn
