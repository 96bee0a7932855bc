"""The queues of one tracked work queue ``Q``, all on the default exchange:

- ``Q``: a quorum queue; a message redelivered more than ``delivery_limit`` times (it could
  never be tracked, e.g. MongoDB was down) is dead-lettered by the broker to ``Q.dlq``;
- ``Q.dlq``: dead letters, for visibility (MongoDB holds the records and payloads);
- ``Q.retry.<delay>``: one delay queue per tier, whose messages expire back into ``Q``;
- ``Q.deadline.<timeout>``: a deadline message per execution that starts processing, which
  expires after the consumer's timeout into ``Q.timeouts``, where the timeout listener fails
  the execution if it is still processing under the same claim (seed 000's mechanism).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

from tracker.constants import deadline_queue_name, dlq_name, retry_queue_name, timeouts_queue_name

DEFAULT_DELIVERY_LIMIT = 20


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


async def declare_work_queue(
    channel: AbstractChannel, queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> AbstractQueue:
    """Declare ``queue`` and its ``.dlq`` (idempotent when the arguments match)."""
    await channel.declare_queue(dlq_name(queue), durable=True, arguments=dlq_arguments())
    return await channel.declare_queue(
        queue, durable=True, arguments=work_queue_arguments(queue, delivery_limit)
    )


async def declare_topology(
    channel: AbstractChannel,
    queue: str,
    tiers_ms: Iterable[int],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> AbstractQueue:
    """Declare the work queue, its dead-letter queue and one delay queue per tier."""
    work = await declare_work_queue(channel, queue, delivery_limit)
    for delay_ms in tiers_ms:
        await channel.declare_queue(
            retry_queue_name(queue, delay_ms),
            durable=True,
            arguments=retry_queue_arguments(queue, delay_ms),
        )
    return work


async def declare_deadline_queues(
    channel: AbstractChannel, queue: str, timeout_ms: int
) -> AbstractQueue:
    """Declare ``Q.deadline.<timeout>`` and ``Q.timeouts``; returns the latter."""
    timeouts = await channel.declare_queue(
        timeouts_queue_name(queue), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await channel.declare_queue(
        deadline_queue_name(queue, timeout_ms),
        durable=True,
        arguments={
            "x-message-ttl": timeout_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": timeouts_queue_name(queue),
        },
    )
    return timeouts


def topology_queue_names(
    queue: str, tiers_ms: Iterable[int], timeout_ms: int | None = None
) -> list[str]:
    names = [queue, dlq_name(queue), *(retry_queue_name(queue, ms) for ms in tiers_ms)]
    if timeout_ms is not None:
        names += [deadline_queue_name(queue, timeout_ms), timeouts_queue_name(queue)]
    return names
