"""Tracking for synchronous pika consumers: an existing ``on_message`` callback, wrapped.

    store = StoreThread.connect(mongodb_url)            # once per process

    @tracked_callback("reports", store=store, max_retries=3)
    def on_message(channel, method, properties, body):  # an existing callback, unchanged
        ...
        channel.basic_ack(method.delivery_tag)          # recorded, not sent (see below)

    on_message.consume(channel)   # the queue and its deadline listener; or basic_consume
    channel.start_consuming()

The wrapper runs the same core as ``@tracker.tracked`` consumers (claim, deduplication,
retries, dead letters, deadlines, middleware, metrics) and acks the delivery itself, after
the outcome is in MongoDB. The callback runs on a thread of its own, so that pika keeps the
connection's heartbeats going however long it takes; it receives a channel on which
``basic_ack``/``basic_nack``/``basic_reject`` of its own delivery are recorded instead of
sent: an ack (or a plain return) is success, ``nack``/``reject`` with ``requeue=True`` a
transient failure, without it a processing failure, and an exception is classified like any
handler's. Its other channel calls are carried out by the connection's thread.

A running synchronous callback cannot be cancelled. When it outlives its timeout, the
consumer fails the attempt itself at the timeout (there is no grace to wait for: nothing can
stop the callback anyway), settles the delivery, and refuses the callback's late outcome; the
callback's thread runs on until the callback returns, and its channel calls then fail. The
deadline listener (``consume``) covers the attempts of a consumer that died: it runs on the
connection's thread, so it acts between deliveries, never inside one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from tracker.classify import Classifier
from tracker.constants import (
    DEFAULT_CONSUMER_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_PAYLOAD_BYTES,
    timeouts_queue_name,
)
from tracker.consumer import Handler, TaskContext, TrackedConsumer, tracked
from tracker.delivery.processor import Processor, ProcessorOptions
from tracker.delivery.settle import handle
from tracker.errors import ProcessingError, TransientError
from tracker.middleware import Middleware
from tracker.observability import MetricsMiddleware, TrackerMetrics
from tracker.rabbit.pika.bridge import OwnerBridge, StoreThread
from tracker.rabbit.pika.transport import PikaDelivery, PikaSubscription, PikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT
from tracker.retry import RetryPolicy
from tracker.service.assembly import default_worker_id
from tracker.service.deadlines import DeadlineListener, DeadlineMiddleware
from tracker.transport import Delivery
from tracker.validation import check_queue

OnMessage = Callable[[Any, Basic.Deliver, BasicProperties, bytes], Any]
# The delivery a TrackedCallback is handling, for its handler (set per delivery task).
_delivery: contextvars.ContextVar[PikaDelivery] = contextvars.ContextVar("tracker_pika_delivery")


class SettledDeliveryError(RuntimeError):
    """A callback that outlived its delivery used its channel after the delivery was
    settled."""


class _RecordingChannel:
    """The consumer's channel as the callback sees it: settling its own delivery is
    recorded, every other operation is carried out by the connection's thread."""

    def __init__(self, channel: BlockingChannel, bridge: OwnerBridge) -> None:
        self._channel = channel
        self._bridge = bridge
        self.settled: tuple[str, bool] | None = None
        self.closed = False

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.settled = self.settled or ("ack", False)

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None:
        self.settled = self.settled or ("nack", requeue)

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.settled = self.settled or ("nack", requeue)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._channel, name)
        if not callable(attribute):
            return attribute

        def carried_out(*args: Any, **kwargs: Any) -> Any:
            if self.closed:
                raise SettledDeliveryError(
                    f"channel.{name}() after the delivery was settled: the callback "
                    "outlived its timeout"
                )
            return self._bridge.call(lambda: attribute(*args, **kwargs))

        return carried_out


class TrackedCallback:
    """A pika ``on_message`` callback wrapped with tracking; call it as pika does, or let
    ``consume(channel)`` subscribe it together with its deadline listener."""

    def __init__(
        self,
        on_message: OnMessage,
        track: Callable[[Handler], TrackedConsumer],
        store: StoreThread,
        options: ProcessorOptions,
        middleware: tuple[Middleware, ...],
        metrics: TrackerMetrics,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        quorum_group_size: int | None = None,
    ) -> None:
        self.on_message = on_message
        label = getattr(on_message, "__qualname__", repr(on_message))
        self.consumer = consumer = replace(track(self._run_callback), label=label)
        self.store = store
        self.metrics = metrics
        self.delivery_limit = delivery_limit
        self.quorum_group_size = quorum_group_size
        self._transport: PikaTransport | None = None
        deadlines = DeadlineMiddleware(lambda: self._transport, {consumer.queue: consumer.timeout})
        self.middleware = (
            MetricsMiddleware(metrics, {consumer.queue: consumer.name}),
            *middleware,
            deadlines,
        )
        self.processor = Processor(consumer, options, self.middleware)

    def transport(self, channel: BlockingChannel) -> PikaTransport:
        """The transport over ``channel`` (made once per channel)."""
        if self._transport is None or self._transport.channel is not channel:
            self._transport = PikaTransport(
                channel,
                self.store,
                delivery_limit=self.delivery_limit,
                quorum_group_size=self.quorum_group_size,
            )
        return self._transport

    def consume(self, channel: BlockingChannel) -> list[PikaSubscription]:
        """Declare the queue's topology and consume it and its ``.timeouts`` queue on
        ``channel`` (call from the thread that owns the connection)."""
        transport = self.transport(channel)
        transport.declare_now(self.consumer)
        listener = DeadlineListener(
            self.processor.outcomes, transport, self.processor.options.requeue_delay
        )
        return [
            transport.consume_now(self.consumer.queue, self._on_delivery),
            transport.consume_now(timeouts_queue_name(self.consumer.queue), listener.on_delivery),
        ]

    def __call__(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        transport = self.transport(channel)
        transport.deliver(self.consumer.queue, self._on_delivery, channel, method, properties, body)

    async def _on_delivery(self, delivery: Delivery) -> None:
        assert isinstance(delivery, PikaDelivery)
        _delivery.set(delivery)
        decision = await handle(self.processor, delivery, self.transport(delivery.channel))
        if decision.interrupt is not None:
            # Raised in the connection's thread (see PikaTransport.deliver), to the application.
            raise decision.interrupt

    async def _run_callback(self, task: TaskContext) -> Any:
        """The consumer's handler: the callback, for the delivery being handled, on a thread
        of its own."""
        delivery = _delivery.get()
        recording = _RecordingChannel(delivery.channel, self.transport(delivery.channel).bridge)
        try:
            return await _in_thread(self._callback, recording, delivery)
        finally:
            recording.closed = True

    def _callback(self, recording: _RecordingChannel, delivery: PikaDelivery) -> Any:
        envelope = delivery.envelope
        method = Basic.Deliver(
            delivery_tag=delivery.tag, redelivered=envelope.redelivered, routing_key=envelope.queue
        )
        properties = BasicProperties(
            headers=dict(envelope.headers),
            message_id=envelope.message_id,
            correlation_id=envelope.correlation_id,
        )
        result = self.on_message(recording, method, properties, envelope.body)
        if recording.settled is not None and recording.settled[0] == "nack":
            requeue = recording.settled[1]
            raise (TransientError if requeue else ProcessingError)(
                f"the callback {'nacked' if requeue else 'rejected'} the message"
            )
        return result


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on a new daemon thread: one that outlives its timeout is left to
    finish on its own, without holding a worker thread of a pool."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="tracker-callback", daemon=True).start()
    return await asyncio.wrap_future(future)


def tracked_callback(
    queue: str,
    *,
    store: StoreThread,
    max_retries: int = DEFAULT_CONSUMER_MAX_RETRIES,
    timeout: float | timedelta = DEFAULT_TIMEOUT_SECONDS,
    retry_on: tuple[type[BaseException], ...] = (),
    classify: Classifier | None = None,
    retry_policy: RetryPolicy | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    timeout_message: str | None = None,
    retention: float | timedelta | None = None,
    archived_retention: float | timedelta | None = None,
    dlq_auto_archive_after: float | timedelta | None = None,
    lease: float = 30.0,
    requeue_delay: float = 1.0,
    store_retry_budget: float = 10.0,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    middleware: tuple[Middleware, ...] = (),
    metrics: TrackerMetrics | None = None,
    worker_id: str | None = None,
    quorum_group_size: int | None = None,
) -> Callable[[OnMessage], TrackedCallback]:
    """Wrap a pika ``on_message(channel, method, properties, body)`` callback with the same
    tracking as ``@tracker.tracked``, with the same options (retention options left None keep
    the ``@tracked`` defaults)."""
    check_queue(queue)
    kept = {
        name: value
        for name, value in (
            ("retention", retention),
            ("archived_retention", archived_retention),
            ("dlq_auto_archive_after", dlq_auto_archive_after),
        )
        if value is not None
    }

    def decorate(on_message: OnMessage) -> TrackedCallback:
        track = tracked(
            queue,
            max_retries=max_retries,
            timeout=timeout,
            retry_on=retry_on,
            classify=classify,
            retry_policy=retry_policy,
            max_payload_bytes=max_payload_bytes,
            timeout_message=timeout_message,
            **kept,
        )
        options = ProcessorOptions(
            worker_id=worker_id or default_worker_id(),
            lease=lease,
            requeue_delay=requeue_delay,
            store_retry_budget=store_retry_budget,
            timeout_grace=0.0,
        )
        return TrackedCallback(
            on_message,
            track,
            store,
            options,
            middleware,
            metrics if metrics is not None else TrackerMetrics(),
            delivery_limit,
            quorum_group_size,
        )

    return decorate
