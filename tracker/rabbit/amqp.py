"""Converting between aio-pika messages and the core's envelopes."""

from __future__ import annotations

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from tracker.envelope import Envelope, OutgoingMessage


def to_envelope(queue: str, message: AbstractIncomingMessage) -> Envelope:
    return Envelope(
        queue=queue,
        body=message.body,
        headers=dict(message.headers or {}),
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        redelivered=bool(message.redelivered),
    )


async def confirming_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel whose publishes wait for the broker's confirm and raise on a return."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def publish(channel: AbstractChannel, message: OutgoingMessage) -> None:
    """Publish persistently and wait for the broker's confirm (the channel has confirms on
    and raises on a returned, unroutable message)."""
    await channel.default_exchange.publish(
        Message(
            message.body,
            headers=message.headers,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            content_type=message.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
        ),
        routing_key=message.routing_key,
        mandatory=True,
    )
