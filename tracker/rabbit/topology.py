"""The queues of one tracked work queue ``Q``, all on the default exchange, as both adapters
declare them:

- ``Q``: a quorum queue; a message redelivered more than ``delivery_limit`` times (it could
  never be tracked, e.g. MongoDB was down) is dead-lettered by the broker to ``Q.dlq``;
- ``Q.dlq``: dead letters, for visibility (MongoDB holds the records and payloads);
- ``Q.retry.<delay>``: one delay queue per tier, whose messages expire back into ``Q``;
- ``Q.deadline.<timeout>``: a deadline message per execution that starts processing, which
  expires after the consumer's timeout into ``Q.timeouts``, where the timeout listener fails
  the execution if it is still processing under the same claim.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracker.constants import deadline_queue_name, dlq_name, retry_queue_name, timeouts_queue_name

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractQueue

DEFAULT_DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class QueueSpec:
    """One durable queue to declare: its name and arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def work_queue_arguments(
    queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(queue),
    }


def dlq_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def retry_queue_arguments(queue: str, delay_ms: int) -> dict[str, Any]:
    return {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }


def work_queue_specs(queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> list[QueueSpec]:
    """``queue`` and its ``.dlq``, dead-letter queue first (the work queue routes to it)."""
    return [
        QueueSpec(dlq_name(queue), dlq_arguments()),
        QueueSpec(queue, work_queue_arguments(queue, delivery_limit)),
    ]


def retry_specs(queue: str, tiers_ms: Iterable[int]) -> list[QueueSpec]:
    return [
        QueueSpec(retry_queue_name(queue, ms), retry_queue_arguments(queue, ms)) for ms in tiers_ms
    ]


def deadline_specs(queue: str, timeout_ms: int) -> list[QueueSpec]:
    """``Q.timeouts`` and ``Q.deadline.<timeout>``, which expires into it."""
    return [
        QueueSpec(timeouts_queue_name(queue), {"x-queue-type": "quorum"}),
        QueueSpec(
            deadline_queue_name(queue, timeout_ms),
            {
                "x-message-ttl": timeout_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": timeouts_queue_name(queue),
            },
        ),
    ]


def topology_specs(
    queue: str,
    tiers_ms: Iterable[int],
    timeout_ms: int | None = None,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> list[QueueSpec]:
    """Every queue of a tracked queue, in the order they must be declared."""
    specs = work_queue_specs(queue, delivery_limit) + retry_specs(queue, tiers_ms)
    if timeout_ms is not None:
        specs += deadline_specs(queue, timeout_ms)
    return specs


def topology_queue_names(
    queue: str, tiers_ms: Iterable[int], timeout_ms: int | None = None
) -> list[str]:
    return [spec.name for spec in topology_specs(queue, tiers_ms, timeout_ms)]


async def declare_specs(channel: AbstractChannel, specs: Iterable[QueueSpec]) -> AbstractQueue:
    """Declare ``specs`` on an aio-pika channel (idempotent when the arguments match);
    returns the last queue declared."""
    declared: AbstractQueue | None = None
    for spec in specs:
        declared = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    assert declared is not None, "nothing to declare"
    return declared


async def declare_work_queue(
    channel: AbstractChannel, queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> AbstractQueue:
    """Declare ``queue`` and its ``.dlq``."""
    return await declare_specs(channel, work_queue_specs(queue, delivery_limit))


async def declare_topology(
    channel: AbstractChannel,
    queue: str,
    tiers_ms: Iterable[int],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> AbstractQueue:
    """Declare the work queue, its dead-letter queue and one delay queue per tier; returns
    the work queue."""
    work = await declare_work_queue(channel, queue, delivery_limit)
    retries = retry_specs(queue, tiers_ms)
    if retries:
        await declare_specs(channel, retries)
    return work
