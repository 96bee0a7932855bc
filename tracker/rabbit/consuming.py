"""Consuming deliveries as aiormq reads them, inside aio-pika's robust recovery.

aio-pika hands a consumer each delivery as an ``IncomingMessage``, made in a task of its own
(``aio_pika.queue.consumer``): about 30 µs of attribute setting per delivery on a 2-core
machine, for fields the tracker reads five of. A ``DeliveryQueue`` registers a
``Deliveries`` callback with aiormq directly, which then gets aiormq's ``DeliveredMessage``.

Everything else stays aio-pika's: the consumer is recorded with the queue as any robust
consumer is, so a reconnection restores it (through ``consume`` again), a consumer the broker
cancels (its queue deleted) makes the connection recover, and a cancel forgets it. One path of
aio-pika's recovery (``RobustChannel._restore_missing_consumers``) registers a lost consumer
through the base ``Queue.consume``, which wraps deliveries in ``IncomingMessage`` again:
``Deliveries`` takes both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aio_pika import RobustQueue
from aio_pika.abc import AbstractIncomingMessage, ConsumerTag, TimeoutType
from aiormq.abc import DeliveredMessage
from pamqp.common import Arguments

AnyDelivery = DeliveredMessage | AbstractIncomingMessage


class Deliveries:
    """A consumer callback that takes aiormq's deliveries as read, or aio-pika's messages."""

    def __init__(self, callback: Callable[[AnyDelivery], Coroutine[Any, Any, None]]) -> None:
        self.callback = callback

    async def __call__(self, message: AnyDelivery) -> None:
        await self.callback(message)


class DeliveryQueue(RobustQueue):
    """A robust queue whose ``consume`` registers a ``Deliveries`` callback with aiormq as
    it is; any other callback is consumed as aio-pika does."""

    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Awaitable[Any]],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> ConsumerTag:
        if not isinstance(callback, Deliveries):
            return await super().consume(
                callback, no_ack, exclusive, arguments, consumer_tag, timeout, robust
            )
        channel = await self.channel.get_underlay_channel()
        started = await channel.basic_consume(
            queue=self.name,
            consumer_callback=callback.callback,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        tag = started.consumer_tag
        if tag is None:
            raise RuntimeError(f"the broker gave no consumer tag for {self.name!r}")
        if robust:
            # What aio-pika's RobustQueue records: its recovery restores the consumer from it.
            self._consumers[tag] = {
                "callback": callback,
                "no_ack": no_ack,
                "exclusive": exclusive,
                "arguments": arguments,
            }
        return tag


def delivery_fields(message: AnyDelivery) -> tuple[dict[str, Any], str | None, str | None, bool]:
    """(headers, message id, correlation id, redelivered) of either kind of delivery, read
    the same way (aio-pika's message takes an empty id for none)."""
    if isinstance(message, DeliveredMessage):
        properties = message.header.properties
        return (
            dict(properties.headers or {}),
            properties.message_id or None,
            properties.correlation_id or None,
            bool(getattr(message.delivery, "redelivered", False)),
        )
    return (
        dict(message.headers or {}),
        message.message_id,
        message.correlation_id,
        bool(message.redelivered),
    )


def delivery_tag(message: AnyDelivery) -> int:
    tag = message.delivery_tag
    assert tag is not None, "a consumed delivery has a tag"
    return tag
