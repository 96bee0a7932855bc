"""The pika transport: the ``Transport`` protocol over a ``BlockingChannel``, every channel
operation carried out by the thread that owns the connection (``OwnerBridge``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker, UnroutableError
from pika.spec import Basic, BasicProperties

from tracker.consumer import QueueRules
from tracker.delivery.envelope import Envelope, OutgoingMessage
from tracker.errors import HandlerInterrupt, PublishError, TopologyError
from tracker.rabbit.pika.bridge import OwnerBridge, StoreThread
from tracker.rabbit.topology import (
    DEFAULT_DELIVERY_LIMIT,
    GROUP_SIZE,
    QueueSpec,
    refused_argument,
    topology_specs,
    work_queue_specs,
)
from tracker.transport import OnDelivery, Subscription

OnMessage = Callable[[BlockingChannel, Basic.Deliver, BasicProperties, bytes], None]


def to_envelope(
    queue: str, method: Basic.Deliver, properties: BasicProperties, body: bytes
) -> Envelope:
    return Envelope(
        queue=queue,
        body=body,
        headers=dict(properties.headers or {}),
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        redelivered=bool(method.redelivered),
    )


def declare_specs(channel: BlockingChannel, specs: Iterable[QueueSpec]) -> None:
    """Declare ``specs`` on ``channel``, each first on a channel of its own: a queue that
    exists with other arguments closes that one, not the application's. One that differs
    only in its replica count is kept as it is; any other difference is a
    ``TopologyError`` (an asyncio ``Worker`` or ``tracker migrate --topology`` rebuilds the
    delay and deadline queues of an earlier version)."""
    for spec in specs:
        channel.queue_declare(
            spec.name, durable=True, arguments=spec.arguments, passive=_kept(channel, spec)
        )


def _kept(channel: BlockingChannel, spec: QueueSpec) -> bool:
    """Whether ``spec``'s queue exists and is kept as it is (declare it passively)."""
    arguments = spec.arguments
    for attempt in range(2):
        probe = channel.connection.channel()
        try:
            probe.queue_declare(spec.name, durable=True, arguments=arguments)
            return attempt == 1
        except ChannelClosedByBroker as refusal:
            differs = refused_argument(refusal.reply_text)
            if differs != GROUP_SIZE:
                raise TopologyError(
                    f"queue {spec.name!r} exists with other arguments than this version "
                    f"declares ({refusal.reply_text}): run `tracker migrate --topology "
                    "--queue <the tracked queue>` (docs/deploy.md, 'Upgrading the queues')"
                ) from refusal
            if attempt == 1:
                return True
            arguments = {k: v for k, v in spec.arguments.items() if k != GROUP_SIZE}
        finally:
            if probe.is_open:
                probe.close()
    return True


def publish(channel: BlockingChannel, message: OutgoingMessage) -> None:
    """Publish persistently; on a confirming channel, return once the broker has the
    message (pika raises ``UnroutableError``/``NackError`` otherwise)."""
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
            expiration=(
                None if message.expiration is None else str(round(message.expiration * 1000))
            ),
        ),
        mandatory=True,
    )


def publish_or_raise(channel: BlockingChannel, message: OutgoingMessage) -> None:
    """``publish``, its failures as ``PublishError`` (``maybe_published`` unless returned)."""
    try:
        publish(channel, message)
    except UnroutableError as exc:
        raise PublishError(
            f"the broker could not route the message to {message.routing_key!r}",
            maybe_published=False,
        ) from exc
    except (AMQPError, OSError) as exc:
        raise PublishError(
            f"the broker did not confirm the message to {message.routing_key!r}: {exc!r}"
        ) from exc


class PikaDelivery:
    """One pika delivery, settled on its channel by the owner thread."""

    def __init__(self, envelope: Envelope, channel: BlockingChannel, tag: int, bridge: OwnerBridge):
        self.envelope = envelope
        self.channel = channel
        self.tag = tag
        self.bridge = bridge

    async def ack(self) -> None:
        await self.bridge.run(lambda: self.channel.basic_ack(self.tag))

    async def requeue(self) -> None:
        await self.bridge.run(lambda: self.channel.basic_nack(self.tag, requeue=True))

    async def dead_letter(self) -> None:
        await self.bridge.run(lambda: self.channel.basic_nack(self.tag, requeue=False))


class PikaSubscription:
    def __init__(self, channel: BlockingChannel, tag: str, bridge: OwnerBridge) -> None:
        self.channel = channel
        self.tag = tag
        self.bridge = bridge

    async def cancel(self) -> None:
        await self.bridge.run(lambda: self.channel.basic_cancel(self.tag))


class PikaTransport:
    """The transport over an application's pika channel. Deliveries are consumed on that
    channel (the application runs ``start_consuming`` or ``process_data_events``); each is
    handed to the core on the ``StoreThread`` while the owner thread serves. Follow-ups are
    published on channels of the same connection: one with confirms, one without (deadlines).
    """

    def __init__(
        self,
        channel: BlockingChannel,
        store: StoreThread,
        bridge: OwnerBridge | None = None,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        quorum_group_size: int | None = None,
    ) -> None:
        self.channel = channel
        self.store = store
        self.bridge = bridge or OwnerBridge()
        self.delivery_limit = delivery_limit
        self.quorum_group_size = quorum_group_size
        # The application owns the connection, and its reconnection (``PikaNodes``).
        self.on_failover: Callable[[str, str], None] | None = None
        self._confirmed: BlockingChannel | None = None
        self._unconfirmed: BlockingChannel | None = None

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open and self.channel.connection.is_open)

    @property
    def node(self) -> str | None:
        params = getattr(getattr(self.channel.connection, "_impl", None), "params", None)
        return None if params is None else f"{params.host}:{params.port}"

    async def open(self) -> None:
        """The application opened the connection."""

    async def close(self) -> None:
        """The application closes the connection."""

    async def declare_work_queue(self, queue: str) -> None:
        specs = work_queue_specs(queue, self.delivery_limit, self.quorum_group_size)
        await self.bridge.run(lambda: declare_specs(self.channel, specs))

    async def declare(self, rules: QueueRules) -> None:
        await self.bridge.run(lambda: self.declare_now(rules))

    def declare_now(self, rules: QueueRules) -> None:
        """In the owner thread: every queue ``rules.queue`` needs."""
        specs = topology_specs(
            rules.queue,
            rules.retry_policy.tiers_ms,
            round(rules.timeout * 1000),
            self.delivery_limit,
            self.quorum_group_size,
        )
        declare_specs(self.channel, specs)

    async def consume(self, queue: str, on_delivery: OnDelivery) -> Subscription:
        return await self.bridge.run(lambda: self.consume_now(queue, on_delivery))

    def consume_now(self, queue: str, on_delivery: OnDelivery) -> PikaSubscription:
        """In the owner thread: ``basic_consume`` with a callback that hands each delivery
        to ``on_delivery`` on the store's loop."""
        tag = self.channel.basic_consume(queue, self.callback(queue, on_delivery))
        return PikaSubscription(self.channel, tag, self.bridge)

    def callback(self, queue: str, on_delivery: OnDelivery) -> OnMessage:
        """A pika ``on_message`` callback that runs ``on_delivery`` to the end."""

        def on_message(
            channel: BlockingChannel,
            method: Basic.Deliver,
            properties: BasicProperties,
            body: bytes,
        ) -> None:
            self.deliver(queue, on_delivery, channel, method, properties, body)

        return on_message

    def deliver(
        self,
        queue: str,
        on_delivery: OnDelivery,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        """In the owner thread (a pika callback): run ``on_delivery`` on the store's loop,
        serving its channel operations until it is done."""
        assert method.delivery_tag is not None, "a delivery always has a tag"
        delivery = PikaDelivery(
            to_envelope(queue, method, properties, body), channel, method.delivery_tag, self.bridge
        )
        done = self.store.submit(on_delivery(delivery))
        self.bridge.serve_until(done, channel.connection)
        try:
            done.result()
        except HandlerInterrupt as interrupt:
            # The handler asked the process to stop: stop it, non-zero, from this thread.
            raise SystemExit(interrupt.exit_code) from interrupt

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        await self.bridge.run(lambda: self.publish_now(message, confirm=confirm))

    def publish_now(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        """In the owner thread."""
        publish_or_raise(self._publishing_channel(confirm), message)

    def _publishing_channel(self, confirm: bool) -> BlockingChannel:
        current = self._confirmed if confirm else self._unconfirmed
        if current is None or not current.is_open:
            current = self.channel.connection.channel()
            if confirm:
                current.confirm_delivery()
                self._confirmed = current
            else:
                self._unconfirmed = current
        return current
