"""Declaring a tracked queue's queues when some exist with other arguments (an earlier
version's, another worker's replica count), on a connection of its own, so that a refused
declaration closes nothing the worker uses.

- A queue whose only difference is its replica count (``x-quorum-initial-group-size``, which
  matters only when a queue is created) is kept as it is.
- A delay or deadline queue (``QueueSpec.transit``) is rebuilt in place: its messages move
  to a holding queue, it is deleted and declared again, and they move back. A message is
  acked at its source only once the broker has confirmed its copy, so a crash at any step
  loses nothing: the next rebuild starts by moving back what a holding queue still has. A
  message may then be copied twice, which is harmless (a duplicate delivery is skipped). A
  copy waits its full delay again: a retry comes up to one delay late, a deadline fires
  late (never early), and the sweeper covers it either way.
- Any other difference is a ``TopologyError`` naming the queue: a work queue holds work and
  is never rebuilt automatically (docs/deploy.md, "Upgrading the queues").
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from tracker.errors import TopologyError
from tracker.rabbit.topology import GROUP_SIZE, QueueSpec, refused_argument

log = structlog.get_logger("tracker.topology")

DECLARED, KEPT, REBUILT = "declared", "kept", "rebuilt"
QUORUM = object()
HOLDING_SUFFIX = ".rebuild"
# A publisher of an earlier version may keep adding to a queue being rebuilt: give up after
# this many rounds rather than loop.
MAX_ROUNDS = 20


async def declare_queues(url: str, specs: Sequence[QueueSpec]) -> dict[str, str]:
    """Make every queue of ``specs`` exist on the broker at ``url``, with its arguments or
    (for the differences above) as it is. What was done, by queue: ``declared`` (created,
    or already in step), ``kept`` (as it is: declare it passively), or ``rebuilt``."""
    done: dict[str, str] = {}
    connection = await aio_pika.connect(url)
    try:
        for spec in specs:
            refusal = await _declare(connection, spec.name, spec.arguments)
            if refusal is None:
                done[spec.name] = DECLARED
            elif await _differs_only_in_group_size(connection, spec, refusal):
                log.info(
                    "queue kept with its replica count (the setting applies to new queues)",
                    queue=spec.name,
                )
                done[spec.name] = KEPT
            elif spec.transit:
                await rebuild(url, spec)
                done[spec.name] = REBUILT
            else:
                raise TopologyError(
                    f"queue {spec.name!r} exists with other arguments than this version "
                    f"declares ({refusal}); it holds work, so it is not rebuilt automatically: "
                    "see docs/deploy.md, 'Upgrading the queues'"
                )
    finally:
        await connection.close()
    return done


async def plan_queues(url: str, specs: Sequence[QueueSpec]) -> dict[str, str]:
    """What ``declare_queues`` would do, changing nothing: by queue, ``create``,
    ``declared`` (in step), ``kept``, ``rebuild`` or ``refuse``."""
    plan: dict[str, str] = {}
    connection = await aio_pika.connect(url)
    try:
        for spec in specs:
            if not await _exists(connection, spec.name):
                plan[spec.name] = "create"
                continue
            # The queue exists: declaring it with its arguments changes nothing either way.
            refusal = await _declare(connection, spec.name, spec.arguments)
            if refusal is None:
                plan[spec.name] = DECLARED
            elif await _differs_only_in_group_size(connection, spec, refusal):
                plan[spec.name] = KEPT
            else:
                plan[spec.name] = "rebuild" if spec.transit else "refuse"
    finally:
        await connection.close()
    return plan


async def _exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return True


async def rebuild(url: str, spec: QueueSpec) -> int:
    """Rebuild ``spec``'s queue with its arguments, keeping its messages; how many moved.
    Safe to run from several processes at once, and again after a crash."""
    holding = spec.name + HOLDING_SUFFIX
    connection = await aio_pika.connect(url)
    try:
        if await _declare(connection, holding, {}) is not None:
            raise TopologyError(f"queue {holding!r} exists with arguments: remove it first")
        moved = 0
        for _ in range(MAX_ROUNDS):
            if await _declare(connection, spec.name, spec.arguments) is None:
                break  # rebuilt (by now, or by another process)
            moved += await _move(connection, spec.name, holding)
            if await _declare(connection, spec.name, spec.arguments) is None:
                break  # another process rebuilt it while this one moved: keep it
            if await _delete_if_empty(connection, spec.name) is QUORUM:
                # A quorum queue cannot be deleted "if empty"; the broker closed the
                # connection. Rebuilt by another process since, or not rebuildable.
                await connection.close()
                connection = await aio_pika.connect(url)
                if await _declare(connection, spec.name, spec.arguments) is None:
                    break
                raise TopologyError(
                    f"queue {spec.name!r} is a quorum queue with other arguments: it cannot "
                    "be rebuilt without losing what arrives meanwhile; delete it once empty"
                )
        else:
            raise TopologyError(f"queue {spec.name!r} could not be rebuilt: it keeps refilling")
        for _ in range(MAX_ROUNDS):
            await _move(connection, holding, spec.name)
            if await _delete_if_empty(connection, holding):
                break
        log.info("queue rebuilt with this version's arguments", queue=spec.name, messages=moved)
        return moved
    finally:
        await connection.close()


async def _declare(
    connection: AbstractConnection, name: str, arguments: Mapping[str, Any]
) -> str | None:
    """Declare on a channel of its own; None, or why the broker refused."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=dict(arguments))
    except aiormq.exceptions.ChannelPreconditionFailed as refusal:
        return str(refusal)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return None


async def _differs_only_in_group_size(
    connection: AbstractConnection, spec: QueueSpec, refusal: str
) -> bool:
    """Whether the existing queue is ``spec``'s but for its replica count: the broker names
    one differing argument; without the replica count, nothing else may differ."""
    if refused_argument(refusal) != GROUP_SIZE:
        return False
    without = {name: value for name, value in spec.arguments.items() if name != GROUP_SIZE}
    again = await _declare(connection, spec.name, without)
    return again is None or refused_argument(again) == GROUP_SIZE


async def _move(connection: AbstractConnection, source: str, target: str) -> int:
    """Move every message of ``source`` (if it still exists) to ``target``: each acked once
    its copy is confirmed."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        return await _move_on(channel, source, target)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0  # deleted meanwhile, by another process's rebuild
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _move_on(channel: AbstractChannel, source: str, target: str) -> int:
    queue = await channel.get_queue(source, ensure=False)
    moved = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=message.headers,
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                expiration=message.expiration,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=target,
        )
        await message.ack()
        moved += 1
    return moved


async def _delete_if_empty(connection: AbstractConnection, name: str) -> bool | object:
    """Delete ``name`` if it is empty; False when it is not (refilled meanwhile), ``QUORUM``
    when it is a quorum queue (which cannot be deleted "if empty": the broker then closes the
    connection). The queues rebuilt are classic: an earlier version's delay and deadline
    queues, and the holding queues."""
    channel = await connection.channel()
    try:
        await channel.queue_delete(name, if_empty=True)
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    except aiormq.exceptions.ChannelNotFoundEntity:
        return True
    except aiormq.exceptions.ConnectionNotImplemented:
        return QUORUM
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return True
