"""What the core needs from a message broker, as a protocol both RabbitMQ adapters implement
(``tracker.rabbit``: aio-pika, and pika through a thread bridge).

The core decides; a transport carries out: it declares the queues a tracked queue needs,
delivers messages, publishes follow-ups with the broker's confirm, and settles deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tracker.consumer import QueueRules
    from tracker.delivery.envelope import Envelope, OutgoingMessage


class Delivery(Protocol):
    """One message handed to a consumer, settled exactly once."""

    @property
    def envelope(self) -> Envelope: ...

    async def ack(self) -> None:
        """Acknowledge: the broker forgets the message."""

    async def requeue(self) -> None:
        """Return the message to its queue, to be delivered again (``redelivered``)."""

    async def dead_letter(self) -> None:
        """Refuse the message for good: the broker moves it to its queue's ``.dlq``."""


OnDelivery = Callable[[Delivery], Coroutine[Any, Any, None]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop delivering; deliveries already handed out stay unsettled until settled."""


class Transport(Protocol):
    # Called with (from node, to node), both ``host:port``, when the connection moves to
    # another broker node.
    on_failover: Callable[[str, str], None] | None

    @property
    def is_open(self) -> bool:
        """Connected now (not merely trying to reconnect)."""

    @property
    def node(self) -> str | None:
        """The broker node connected to, as ``host:port`` (never credentials)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def declare_work_queue(self, queue: str) -> None:
        """The queue publishers write to, and its dead-letter queue."""

    async def declare(self, rules: QueueRules) -> None:
        """Every queue a tracked queue needs: work, dead letters, retry delays, deadlines."""

    async def consume(self, queue: str, on_delivery: OnDelivery) -> Subscription:
        """Call ``on_delivery`` for each delivery of ``queue`` until the subscription is
        cancelled."""

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        """Publish persistently; with ``confirm``, return once the broker has it and raise
        ``PublishError`` if it refuses or cannot route it."""
