"""The queues of one tracked work queue ``Q``, all on the default exchange, as both adapters
declare them:

- ``Q``: a quorum queue; a message redelivered more than ``delivery_limit`` times (it could
  never be tracked, e.g. MongoDB was down) is dead-lettered by the broker to ``Q.dlq``;
- ``Q.dlq``: dead letters, for visibility (MongoDB holds the records and payloads);
- ``Q.retry.<delay>``: one delay queue per tier, whose messages expire back into ``Q``;
- ``Q.deadline.<timeout>``: a deadline message per execution that starts processing, which
  expires after the consumer's timeout into ``Q.timeouts``, where the timeout listener fails
  the execution if it is still processing under the same claim.

Every queue is a quorum queue, replicated across the cluster (``quorum_group_size`` nodes
when given, the broker's default otherwise; it applies when a queue is created). The delay
and deadline queues dead-letter *at least once*: an expired message leaves its queue only
once the queue it expires into has it, so a node that stops or crashes meanwhile loses no
retry and no deadline (with classic queues RabbitMQ dead-letters at most once). Their
messages only pass through: ``tracker.rabbit.upgrade`` rebuilds them in place when they
exist with other arguments (from an earlier version).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracker.constants import deadline_queue_name, dlq_name, retry_queue_name, timeouts_queue_name

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractQueue

DEFAULT_DELIVERY_LIMIT = 20


GROUP_SIZE = "x-quorum-initial-group-size"
_REFUSED_ARGUMENT = re.compile(r"inequivalent arg '([^']+)'")


@dataclass(frozen=True)
class QueueSpec:
    """One durable queue to declare: its name and arguments. ``transit``: its messages only
    pass through it (a delay or deadline queue), so it may be rebuilt with other arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    transit: bool = False


def quorum_arguments(group_size: int | None = None, **more: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if group_size is not None:
        arguments[GROUP_SIZE] = group_size
    return {**arguments, **more}


def work_queue_arguments(
    queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT, group_size: int | None = None
) -> dict[str, Any]:
    return quorum_arguments(
        group_size,
        **{
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq_name(queue),
        },
    )


def transit_arguments(into: str, ttl_ms: int, group_size: int | None = None) -> dict[str, Any]:
    """A queue whose messages wait ``ttl_ms`` (or their own expiration) and then move to
    ``into``, at least once: an expired message stays until ``into`` has it, which needs
    ``reject-publish`` overflow."""
    return quorum_arguments(
        group_size,
        **{
            "x-message-ttl": ttl_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": into,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def work_queue_specs(
    queue: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT, group_size: int | None = None
) -> list[QueueSpec]:
    """``queue`` and its ``.dlq``, dead-letter queue first (the work queue routes to it)."""
    return [
        QueueSpec(dlq_name(queue), quorum_arguments(group_size)),
        QueueSpec(queue, work_queue_arguments(queue, delivery_limit, group_size)),
    ]


def retry_specs(
    queue: str, tiers_ms: Iterable[int], group_size: int | None = None
) -> list[QueueSpec]:
    return [
        QueueSpec(
            retry_queue_name(queue, ms), transit_arguments(queue, ms, group_size), transit=True
        )
        for ms in tiers_ms
    ]


def deadline_specs(queue: str, timeout_ms: int, group_size: int | None = None) -> list[QueueSpec]:
    """``Q.timeouts`` and ``Q.deadline.<timeout>``, which expires into it."""
    timeouts = timeouts_queue_name(queue)
    return [
        QueueSpec(timeouts, quorum_arguments(group_size)),
        QueueSpec(
            deadline_queue_name(queue, timeout_ms),
            transit_arguments(timeouts, timeout_ms, group_size),
            transit=True,
        ),
    ]


def topology_specs(
    queue: str,
    tiers_ms: Iterable[int],
    timeout_ms: int | None = None,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    group_size: int | None = None,
) -> list[QueueSpec]:
    """Every queue of a tracked queue, in the order they must be declared."""
    specs = work_queue_specs(queue, delivery_limit, group_size)
    specs += retry_specs(queue, tiers_ms, group_size)
    if timeout_ms is not None:
        specs += deadline_specs(queue, timeout_ms, group_size)
    return specs


def refused_argument(refusal: str) -> str | None:
    """The argument a broker's PRECONDITION_FAILED names as differing from the queue's."""
    match = _REFUSED_ARGUMENT.search(refusal)
    return match.group(1) if match else None


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
