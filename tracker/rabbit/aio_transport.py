"""The aio-pika transport: one robust connection with three channels (confirmed publishes,
unconfirmed publishes, consuming with the prefetch), and the conversions between aio-pika
messages and the core's envelopes."""

from __future__ import annotations

import asyncio
import contextlib

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractQueue,
)

from tracker.consumer import QueueRules
from tracker.delivery.envelope import Envelope, OutgoingMessage
from tracker.errors import PublishError
from tracker.rabbit.acks import ChannelAcks
from tracker.rabbit.consuming import AnyDelivery, Deliveries, delivery_fields, delivery_tag
from tracker.rabbit.failover import FailoverConnection, connect_failover
from tracker.rabbit.nodes import OnFailover, parse_urls, redact_all
from tracker.rabbit.properties import properties
from tracker.rabbit.topology import (
    DEFAULT_DELIVERY_LIMIT,
    QueueSpec,
    topology_specs,
    work_queue_specs,
)
from tracker.rabbit.upgrade import KEPT, declare_queues
from tracker.transport import OnDelivery


def to_envelope(queue: str, message: AnyDelivery) -> Envelope:
    headers, message_id, correlation_id, redelivered = delivery_fields(message)
    return Envelope(
        queue=queue,
        body=message.body,
        headers=headers,
        message_id=message_id,
        correlation_id=correlation_id,
        redelivered=redelivered,
    )


async def confirming_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel whose publishes wait for the broker's confirm and raise on a return."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def publish(
    channel: AbstractChannel, message: OutgoingMessage, timeout: float | None = None
) -> None:
    """Publish persistently; on a confirming channel, wait for the broker's confirm (and
    raise on a returned, unroutable message), at most ``timeout`` seconds.

    Written on the channel's aiormq channel, as aio-pika's ``Exchange.publish`` does, with
    the frame's properties made directly: aio-pika's ``Message`` costs about 20 µs to build
    per publish, for the same properties."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        message.body,
        routing_key=message.routing_key,
        properties=properties(message),
        mandatory=True,
        timeout=timeout,
    )


class AioDelivery:
    """One delivery, as the core settles it; its ack goes out with the others of its
    channel (``tracker.rabbit.acks``)."""

    __slots__ = ("acks", "envelope", "tag")

    def __init__(self, queue: str, message: AnyDelivery, acks: ChannelAcks) -> None:
        self.tag = delivery_tag(message)
        self.acks = acks
        self.envelope = to_envelope(queue, message)

    async def ack(self) -> None:
        self.acks.ack(self.tag)

    async def requeue(self) -> None:
        await self.acks.nack(self.tag, requeue=True)

    async def dead_letter(self) -> None:
        await self.acks.nack(self.tag, requeue=False)


class AioSubscription:
    def __init__(self, queue: AbstractQueue, tag: str) -> None:
        self.queue = queue
        self.tag = tag

    async def cancel(self) -> None:
        await self.queue.cancel(self.tag)


class AioPikaTransport:
    """``prefetch``: deliveries in flight per consumed queue; ``publish_timeout``: how long a
    publish waits for the broker's confirm; ``quorum_group_size``: the replicas of each
    queue it creates (None: the broker's default)."""

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 10,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        publish_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        on_failover: OnFailover | None = None,
        quorum_group_size: int | None = None,
    ) -> None:
        self.url = url
        self.nodes = redact_all(parse_urls(url))
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.on_failover = on_failover
        self.delivery_limit = delivery_limit
        self.quorum_group_size = quorum_group_size
        self.connection: FailoverConnection | None = None
        self._confirmed: AbstractChannel | None = None
        self._unconfirmed: AbstractChannel | None = None
        self._consuming: AbstractChannel | None = None
        # Queues declared on the consuming channel: a robust channel restores exactly these,
        # and their consumers, after a reconnection.
        self._queues: dict[str, AbstractQueue] = {}
        self._acks: ChannelAcks | None = None

    @property
    def is_open(self) -> bool:
        connection = self.connection
        # A robust connection is "not closed" while it reconnects; `connected` tells.
        return connection is not None and connection.connected.is_set()

    async def wait_open(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection to be up (reconnected, perhaps
        to another node); whether it is."""
        connection = self.connection
        if connection is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.connected.wait(), timeout)
        return self.is_open

    @property
    def node(self) -> str | None:
        """The node connected to (``host:port``), None when not connected."""
        return self.connection.current_node if self.is_open and self.connection else None

    async def open(self) -> None:
        """Connect to the first node of ``url`` (one URL, or several, comma-separated) that
        answers; on its loss the connection moves to the next (``tracker.rabbit.failover``).
        ``NoBrokerNodeError`` when none answers within ``connect_timeout`` each."""
        self.connection = await connect_failover(
            self.url, timeout=self.connect_timeout, on_failover=self.on_failover
        )
        self._confirmed = await confirming_channel(self.connection)
        self._unconfirmed = await self.connection.channel(publisher_confirms=False)
        self._consuming = await self.connection.channel()
        await self._consuming.set_qos(prefetch_count=self.prefetch)

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        self._confirmed = self._unconfirmed = self._consuming = None
        self._queues.clear()
        self._acks = None
        if connection is not None:
            await connection.close()

    async def declare_work_queue(self, queue: str) -> None:
        specs = work_queue_specs(queue, self.delivery_limit, self.quorum_group_size)
        await self._declare(self._require(self._confirmed), specs)

    async def declare(self, rules: QueueRules) -> None:
        specs = topology_specs(
            rules.queue,
            rules.retry_policy.tiers_ms,
            round(rules.timeout * 1000),
            self.delivery_limit,
            self.quorum_group_size,
        )
        declared = await self._declare(self._require(self._consuming), specs)
        for spec, queue in zip(specs, declared, strict=True):
            self._queues[spec.name] = queue

    async def _declare(
        self, channel: AbstractChannel, specs: list[QueueSpec]
    ) -> list[AbstractQueue]:
        """Bring the queues in step on a connection of their own (``tracker.rabbit.upgrade``),
        then declare them on ``channel``: passively those kept as they are."""
        assert self.connection is not None
        done = await declare_queues(self.connection.current_url, specs)
        return [
            await channel.declare_queue(
                spec.name, durable=True, arguments=spec.arguments, passive=done[spec.name] == KEPT
            )
            for spec in specs
        ]

    async def consume(self, queue: str, on_delivery: OnDelivery) -> AioSubscription:
        declared = self._queues.get(queue)
        if declared is None:
            raise PublishError(f"queue {queue!r} was not declared on this transport")

        async def on_message(message: AnyDelivery) -> None:
            await on_delivery(AioDelivery(queue, message, self._acks_of(message.channel)))

        return AioSubscription(declared, await declared.consume(Deliveries(on_message)))

    def _acks_of(self, channel: aiormq.abc.AbstractChannel) -> ChannelAcks:
        """The acks of the channel a delivery came on: a new one after a reconnection, as
        delivery tags start again with a new channel."""
        acks = self._acks
        if acks is None or acks.channel is not channel:
            acks = self._acks = ChannelAcks(channel)
        return acks

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        channel = self._require(self._confirmed if confirm else self._unconfirmed)
        try:
            await publish(channel, message, self.publish_timeout)
        except aiormq.exceptions.PublishError as exc:  # returned: no queue took it
            raise PublishError(
                f"the broker could not route the message to {message.routing_key!r}",
                maybe_published=False,
            ) from exc
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,  # reconnecting: it is a RuntimeError
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise PublishError(
                f"the broker did not confirm the message to {message.routing_key!r}: {exc!r}"
            ) from exc

    @staticmethod
    def _require(channel: AbstractChannel | None) -> AbstractChannel:
        if channel is None:
            raise PublishError("the RabbitMQ transport is not open")
        return channel
