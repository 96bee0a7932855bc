"""``Worker``: runs tracked consumers on aio-pika, carrying out the core's decisions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from tracker import db
from tracker.constants import DEFAULT_AMQP_URL
from tracker.consumer import TrackedConsumer
from tracker.envelope import OutgoingMessage
from tracker.errors import ConfigurationError
from tracker.middleware import Middleware, run_hooks
from tracker.observability import (
    MetricsMiddleware,
    MetricsServer,
    QueueStatsCollector,
    TrackerMetrics,
)
from tracker.processor import Decision, Processor, ProcessorOptions
from tracker.rabbit.amqp import confirming_channel, publish, to_envelope
from tracker.rabbit.deadlines import DeadlineMiddleware, read_deadline
from tracker.rabbit.topology import (
    DEFAULT_DELIVERY_LIMIT,
    declare_deadline_queues,
    declare_topology,
)
from tracker.sweeper import Sweeper

log = structlog.get_logger("tracker.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Subscription:
    processor: Processor
    queue: AbstractQueue
    tag: str


class Worker:
    """Consume the queues of ``consumers`` with at most ``concurrency`` messages in flight
    per queue (the prefetch).

    ``async with Worker([...], amqp_url):`` starts consuming and, on exit, stops gracefully:
    no new deliveries, in-flight handlers get ``shutdown_timeout`` seconds to finish, the rest
    are cancelled and their deliveries left unacked for redelivery, their claims released.
    The connection is robust: it reconnects and resumes consuming after a broker restart.
    """

    def __init__(
        self,
        consumers: Iterable[TrackedConsumer],
        amqp_url: str | None = None,
        *,
        concurrency: int = 10,
        shutdown_timeout: float = 30.0,
        lease: float = 30.0,
        requeue_delay: float = 1.0,
        store_retry_budget: float = 10.0,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: Iterable[Middleware] = (),
        worker_id: str | None = None,
        metrics: TrackerMetrics | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        stats_interval: float | None = 15.0,
        timeout_grace: float = 5.0,
        sweep_interval: float | None = 60.0,
        stuck_grace: float = 30.0,
        republish_after: float = 600.0,
    ) -> None:
        self.consumers = list(consumers)
        if not self.consumers:
            raise ConfigurationError("a Worker needs at least one @tracked consumer")
        queues = [c.queue for c in self.consumers]
        if len(set(queues)) != len(queues):
            raise ConfigurationError(f"two consumers for one queue: {sorted(queues)}")
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self.amqp_url = amqp_url or DEFAULT_AMQP_URL
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.delivery_limit = delivery_limit
        self.metrics = metrics if metrics is not None else TrackerMetrics()
        self.middleware = (
            MetricsMiddleware(self.metrics, {c.queue: c.name for c in self.consumers}),
            *middleware,
            DeadlineMiddleware(
                lambda: self._deadline_channel, {c.queue: c.timeout for c in self.consumers}
            ),
        )
        self.collector = QueueStatsCollector(
            self.metrics, {c.queue: c.timeout for c in self.consumers}, stats_interval or 15.0
        )
        self._collecting = stats_interval is not None
        port = metrics_port if metrics_port is not None else _port_from_environment()
        self.metrics_server = (
            None
            if port is None
            else MetricsServer(
                self.metrics.registry,
                checks={"mongodb": db.ping, "rabbitmq": self._broker_connected},
                host=metrics_host,
                port=port,
            )
        )
        self.worker_id = worker_id or default_worker_id()
        self.options = ProcessorOptions(
            worker_id=self.worker_id,
            lease=lease,
            requeue_delay=requeue_delay,
            store_retry_budget=store_retry_budget,
            timeout_grace=timeout_grace,
        )
        self.processors = {
            c.queue: Processor(c, self.options, self.middleware) for c in self.consumers
        }
        self.sweeper = Sweeper(
            self.processors,
            self._publish,
            interval=sweep_interval or 60.0,
            stuck_grace=stuck_grace,
            republish_after=republish_after,
        )
        self._sweeping = sweep_interval is not None
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._deadline_channel: AbstractChannel | None = None
        self._subscriptions: list[_Subscription] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._publish_channel = await confirming_channel(self._connection)
        self._deadline_channel = await self._connection.channel(publisher_confirms=False)
        consume_channel = await self._connection.channel()
        await consume_channel.set_qos(prefetch_count=self.concurrency)
        for consumer in self.consumers:
            processor = self.processors[consumer.queue]
            queue = await declare_topology(
                consume_channel,
                consumer.queue,
                consumer.retry_policy.tiers_ms,
                self.delivery_limit,
            )
            timeouts = await declare_deadline_queues(
                consume_channel, consumer.queue, round(consumer.timeout * 1000)
            )
            tag = await queue.consume(self._dispatcher(processor))
            self._subscriptions.append(_Subscription(processor, queue, tag))
            tag = await timeouts.consume(self._deadline_dispatcher(processor))
            self._subscriptions.append(_Subscription(processor, timeouts, tag))
        if self._collecting:
            self.collector.start()
        if self._sweeping:
            self.sweeper.start()
        if self.metrics_server is not None:
            await self.metrics_server.start()
        log.info(
            "worker started",
            worker_id=self.worker_id,
            queues=[c.queue for c in self.consumers],
            concurrency=self.concurrency,
        )

    async def run_forever(self) -> None:
        """Wait until ``stop()`` is called (from a signal handler, say)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop consuming, let in-flight handlers finish within ``shutdown_timeout``, cancel
        the rest (their deliveries return to the queue), close the connection."""
        if self._connection is None:
            return
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.queue.cancel(subscription.tag)
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=self.shutdown_timeout)
            if pending:
                log.warning("cancelling unfinished handlers", count=len(pending))
                await self._cancel(pending)
        await self._close()
        log.info("worker stopped", worker_id=self.worker_id)

    async def abort(self) -> None:
        """Stop at once, as a crash would: the connection closes first, so nothing more is
        acked, and in-flight handlers are cancelled without releasing their claims."""
        if self._connection is None:
            return
        for subscription in self._subscriptions:
            subscription.processor.release_on_cancel = False
        connection = self._connection
        await self._close(connection)
        await self._cancel(set(self._in_flight))

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _broker_connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def _close(self, connection: AbstractRobustConnection | None = None) -> None:
        await self.collector.stop()
        await self.sweeper.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        connection = connection or self._connection
        self._connection = None
        self._subscriptions.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        self._stopped.set()

    def _dispatcher(
        self, processor: Processor
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(self._handle(processor, message))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        return on_message

    async def _handle(self, processor: Processor, message: AbstractIncomingMessage) -> None:
        envelope = to_envelope(processor.consumer.queue, message)
        try:
            decision = await processor.process(envelope)
            for outgoing in decision.publish:
                await self._publish(outgoing)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery could not be processed; requeued", queue=envelope.queue)
            decision = Decision("error", requeue=True, requeue_delay=self.options.requeue_delay)
        await run_hooks(self.middleware, "before_ack", envelope, decision)
        try:
            if decision.requeue:
                await asyncio.sleep(decision.requeue_delay)
                await message.nack(requeue=True)
            else:
                await message.ack()
        except Exception as exc:
            # The channel closed under us; the broker redelivers, and the outcome already
            # recorded makes the redelivery a skipped duplicate.
            log.warning("could not settle the delivery", error=str(exc), queue=envelope.queue)

    def _deadline_dispatcher(
        self, processor: Processor
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_deadline(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(self._expire(processor, message))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

        return on_deadline

    async def _expire(self, processor: Processor, message: AbstractIncomingMessage) -> None:
        """A deadline passed: fail the execution if it still runs under the same claim."""
        deadline = read_deadline(message.body)
        if deadline is None:
            log.warning("not a deadline message; dropped", queue=processor.consumer.queue)
            await message.ack()
            return
        try:
            decision = await processor.expire(*deadline)
            for outgoing in decision.publish if decision else ():
                await self._publish(outgoing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("deadline not applied; requeued", error=str(exc))
            await asyncio.sleep(self.options.requeue_delay)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        if decision is not None:
            log.warning(
                "execution timed out",
                queue=processor.consumer.queue,
                execution_id=deadline[0],
                outcome=decision.outcome,
            )
        with contextlib.suppress(Exception):
            await message.ack()

    async def _publish(self, message: OutgoingMessage) -> None:
        await publish(self._require_publish_channel(), message)

    def _require_publish_channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise ConfigurationError("the worker is not started")
        return self._publish_channel


def _port_from_environment() -> int | None:
    """TRACKER_METRICS_PORT, when set, starts the endpoint (see tracker.settings)."""
    if not os.environ.get("TRACKER_METRICS_PORT"):
        return None
    from tracker.settings import Settings

    return Settings.from_env().metrics_port
