"""The synchronous pika adapter: tracked ``on_message`` callbacks and a publisher, on the
same core as the asyncio adapter (see ``callback`` for how the two threads cooperate)."""

from __future__ import annotations

from collections.abc import Iterable

from pika.adapters.blocking_connection import BlockingChannel

from tracker.rabbit.pika.bridge import StoreThread
from tracker.rabbit.pika.callback import SettledDeliveryError, TrackedCallback, tracked_callback
from tracker.rabbit.pika.publisher import SyncPublisher
from tracker.rabbit.pika.transport import PikaTransport, declare_specs, publish
from tracker.rabbit.topology import (
    DEFAULT_DELIVERY_LIMIT,
    retry_specs,
    work_queue_specs,
)
from tracker.retry import RetryPolicy


def declare_work_queue(
    channel: BlockingChannel, queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> None:
    """``queue`` and its ``.dlq``, as the asyncio adapter declares them."""
    declare_specs(channel, work_queue_specs(queue, delivery_limit))


def declare_topology(
    channel: BlockingChannel,
    queue: str,
    tiers_ms: Iterable[int] | None = None,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> None:
    """The work queue, its ``.dlq`` and the retry delay queues (``TrackedCallback.consume``
    declares the deadline queues too)."""
    declare_work_queue(channel, queue, delivery_limit)
    declare_specs(
        channel, retry_specs(queue, RetryPolicy().tiers_ms if tiers_ms is None else tiers_ms)
    )


__all__ = [
    "PikaTransport",
    "SettledDeliveryError",
    "StoreThread",
    "SyncPublisher",
    "TrackedCallback",
    "declare_topology",
    "declare_work_queue",
    "publish",
    "tracked_callback",
]
