"""Tracking for synchronous pika consumers and publishers.

The tracker's store is asynchronous, so a ``StoreThread`` runs it on an event loop of its own;
pika's callbacks and publishes stay in the caller's thread, where pika requires them.

    store = StoreThread.connect(mongodb_url)            # once per process

    @tracked_callback("reports", store=store, max_retries=3)
    def on_message(channel, method, properties, body):  # an existing callback, unchanged
        ...
        channel.basic_ack(tag)          # recorded, not sent (see below)

    channel.basic_consume("reports", on_message)

The wrapper acks the delivery itself, after the outcome is in MongoDB. The callback receives
a channel on which ``basic_ack``/``basic_nack``/``basic_reject`` of its own delivery are
recorded instead of sent: an ack (or a plain return) is success, ``nack``/``reject`` with
``requeue=True`` a transient failure, without it a processing failure, and an exception is
classified like any handler's. A synchronous callback cannot be interrupted, so ``timeout``
is enforced by the tracker's deadline and sweeper, not in the callback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from tracker import db, enqueue
from tracker.classify import Classifier
from tracker.constants import (
    DEFAULT_AMQP_URL,
    DEFAULT_CONSUMER_MAX_RETRIES,
    DEFAULT_DATABASE,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_PAYLOAD_BYTES,
    dlq_name,
    retry_queue_name,
)
from tracker.consumer import TaskContext, TrackedConsumer, tracked
from tracker.enqueue import EnqueueResult
from tracker.envelope import Envelope, OutgoingMessage
from tracker.errors import ProcessingError, PublishError, TransientError
from tracker.middleware import Middleware, run_hooks
from tracker.processor import Claimed, Decision, Processor, ProcessorOptions
from tracker.rabbit.topology import (
    DEFAULT_DELIVERY_LIMIT,
    dlq_arguments,
    retry_queue_arguments,
    work_queue_arguments,
)
from tracker.rabbit.worker import default_worker_id
from tracker.retry import RetryPolicy

T = TypeVar("T")
OnMessage = Callable[[Any, Basic.Deliver, BasicProperties, bytes], Any]


class StoreThread:
    """An event loop on a daemon thread that owns the tracker's store connection."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tracker-store", daemon=True
        )
        self._thread.start()

    @classmethod
    def connect(
        cls, mongodb_url: str | None = None, database: str = DEFAULT_DATABASE
    ) -> StoreThread:
        """Start the thread and connect the store on it (``None``: the in-memory MongoDB)."""
        store = cls()
        store.call(db.connect(mongodb_url, database))
        return store

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the store's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.call(db.disconnect())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def declare_topology(
    channel: BlockingChannel,
    queue: str,
    tiers_ms: list[int] | None = None,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> None:
    """The same queues as the asyncio worker declares (see ``tracker.rabbit.topology``)."""
    declare_work_queue(channel, queue, delivery_limit)
    for delay_ms in tiers_ms if tiers_ms is not None else RetryPolicy().tiers_ms:
        channel.queue_declare(
            retry_queue_name(queue, delay_ms),
            durable=True,
            arguments=retry_queue_arguments(queue, delay_ms),
        )


def declare_work_queue(
    channel: BlockingChannel, queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> None:
    """``queue`` and its ``.dlq``, as ``tracker.rabbit.topology.declare_work_queue``."""
    channel.queue_declare(dlq_name(queue), durable=True, arguments=dlq_arguments())
    channel.queue_declare(
        queue, durable=True, arguments=work_queue_arguments(queue, delivery_limit)
    )


def publish(channel: BlockingChannel, message: OutgoingMessage) -> None:
    """Publish persistently on a confirming channel: returns once the broker has the message
    (pika raises ``UnroutableError``/``NackError`` otherwise)."""
    channel.basic_publish(
        "",
        message.routing_key,
        message.body,
        BasicProperties(
            headers=message.headers,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            content_type=message.content_type,
            delivery_mode=pika.DeliveryMode.Persistent,
        ),
        mandatory=True,
    )


class _RecordingChannel:
    """The consumer's channel with settlement of the current delivery recorded, not sent."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self.settled: tuple[str, bool] | None = None

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.settled = self.settled or ("ack", False)

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None:
        self.settled = self.settled or ("nack", requeue)

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.settled = self.settled or ("nack", requeue)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class TrackedCallback:
    """A pika ``on_message`` callback wrapped with tracking; call it as pika does."""

    def __init__(
        self,
        on_message: OnMessage,
        consumer: TrackedConsumer,
        store: StoreThread,
        options: ProcessorOptions,
        middleware: tuple[Middleware, ...],
    ) -> None:
        self.on_message = on_message
        self.consumer = consumer
        self.store = store
        self.processor = Processor(consumer, options, middleware)
        self._publish_channels: dict[int, BlockingChannel] = {}

    def __call__(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        envelope = Envelope(
            queue=self.consumer.queue,
            body=body,
            headers=dict(properties.headers or {}),
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            redelivered=bool(method.redelivered),
        )
        started = self.store.call(self.processor.begin(envelope))
        if isinstance(started, Claimed):
            started = self._run(started, channel, method, properties, body)
        self._settle(channel, method, envelope, started)

    def _run(
        self,
        claimed: Claimed,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> Decision:
        self.store.call(run_hooks(self.processor.middleware, "after_claim", claimed.task))
        recording = _RecordingChannel(channel)
        error: Exception | None = None
        result: Any = None
        try:
            result = self.on_message(recording, method, properties, body)
        except Exception as exc:
            error = exc
        if error is None and recording.settled is not None and recording.settled[0] == "nack":
            requeue = recording.settled[1]
            error = (TransientError if requeue else ProcessingError)(
                f"the callback {'nacked' if requeue else 'rejected'} the message"
            )
        return self.store.call(self.processor.finish(claimed, result=result, error=error))

    def _settle(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        envelope: Envelope,
        decision: Decision,
    ) -> None:
        tag = method.delivery_tag
        assert tag is not None, "a delivery always has a tag"
        publisher = self._publisher_for(channel)
        for message in decision.publish:
            publish(publisher, message)
        self.store.call(run_hooks(self.processor.middleware, "before_ack", envelope, decision))
        if decision.requeue:
            time.sleep(decision.requeue_delay)
            channel.basic_nack(tag, requeue=True)
        else:
            channel.basic_ack(tag)

    def _publisher_for(self, channel: BlockingChannel) -> BlockingChannel:
        """A confirming channel on the consumer's connection, for retries and dead letters."""
        key = id(channel.connection)
        publisher = self._publish_channels.get(key)
        if publisher is None or not publisher.is_open:
            publisher = channel.connection.channel()
            publisher.confirm_delivery()
            self._publish_channels[key] = publisher
        return publisher


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
    lease: float = 30.0,
    middleware: tuple[Middleware, ...] = (),
    worker_id: str | None = None,
) -> Callable[[OnMessage], TrackedCallback]:
    """Wrap a pika ``on_message(channel, method, properties, body)`` callback with the same
    tracking, deduplication, retries and dead letters as ``@tracker.tracked``."""

    async def unused(task: TaskContext) -> None:  # the callback runs in pika's thread instead
        raise NotImplementedError

    consumer = tracked(
        queue,
        max_retries=max_retries,
        timeout=timeout,
        retry_on=retry_on,
        classify=classify,
        retry_policy=retry_policy,
        max_payload_bytes=max_payload_bytes,
    )(unused)
    options = ProcessorOptions(worker_id=worker_id or default_worker_id(), lease=lease)

    def decorate(on_message: OnMessage) -> TrackedCallback:
        return TrackedCallback(on_message, consumer, store, options, middleware)

    return decorate


class SyncPublisher:
    """``with SyncPublisher(amqp_url, store=store) as pub: pub.enqueue("reports", payload)``:
    the same contract as the asyncio ``Publisher``, from synchronous code."""

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        store: StoreThread,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.amqp_url = amqp_url or DEFAULT_AMQP_URL
        self.store = store
        self.delivery_limit = delivery_limit
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
            )
        )
        if message is None:
            return result
        try:
            if queue not in self._declared:
                declare_work_queue(self._channel, queue, self.delivery_limit)
                self._declared.add(queue)
            publish(self._channel, message)
        except Exception as exc:
            raise self.store.call(enqueue.roll_back(queue, result, exc)) from exc
        return result
