"""Bringing into the tracker the messages RabbitMQ dead-lettered itself (a delivery limit
reached while MongoDB was down), so no failure stays invisible, and emptying ``Q.dlq``.

The tracker records its own dead letters in MongoDB only; ``Q.dlq`` holds what the broker put
there (and the copies earlier versions of the tracker put there). Each message read is
settled: recorded as a dead letter and removed, or just removed when it is known already:
its execution has a record (whatever its status), was purged (``operations.purged``), or the
message is a copy the tracker itself made of a dead letter it recorded (it carries
``x-error-category``). So a copy never brings back a dead letter an operator archived or
purged. A message that breaks the contract is recorded as a rejected delivery (category
``validation``) like the consumer would record it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity

from tracker.clock import utcnow
from tracker.constants import HEADER_ERROR_CATEGORY, dlq_name
from tracker.delivery.envelope import TaskMessage
from tracker.delivery.reading import read
from tracker.delivery.rejection import Rejections
from tracker.errors import NotFoundError
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.operations import groups, purged
from tracker.rabbit.aio_transport import to_envelope
from tracker.rabbit.failover import connect_failover
from tracker.store.creation import create_execution
from tracker.validation import check_queue, printable

DELIVERY_LIMIT_TYPE = "DeliveryLimitExceeded"
# Seconds each broker node gets to answer.
CONNECT_TIMEOUT = 10.0


@dataclass
class ImportReport:
    imported: int = 0
    already_tracked: int = 0
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)


def _death_reason(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    reason = headers.get("x-first-death-reason")
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return printable(str(reason or "unknown"), 100)


async def import_queues(
    amqp_url: str, queues: Sequence[str], *, dry_run: bool = False
) -> dict[str, ImportReport]:
    """``import_untracked`` for each of ``queues``, on the first node of ``amqp_url`` that
    answers. Every ``.dlq`` is looked for first, so a name that is wrong stops the import
    before anything is imported (``NotFoundError``); ``NoBrokerNodeError`` when no node
    answers."""
    for queue in queues:
        check_queue(queue)
    connection = await connect_failover(amqp_url, timeout=CONNECT_TIMEOUT, shuffle=False)
    try:
        for queue in queues:
            checking = await connection.channel()
            await _source(checking, queue)
            await checking.close()
        return {
            queue: await import_untracked(await connection.channel(), queue, dry_run=dry_run)
            for queue in queues
        }
    finally:
        await connection.close()


async def _source(channel: AbstractChannel, queue: str) -> AbstractQueue:
    """``queue``'s ``.dlq``, or ``NotFoundError`` when the broker has none."""
    try:
        return await channel.declare_queue(dlq_name(queue), passive=True)
    except ChannelNotFoundEntity as error:
        # The broker closes the channel on a passive declare of a queue it does not have.
        raise NotFoundError(
            f"RabbitMQ has no queue {dlq_name(queue)!r}: is {queue!r} a tracked queue "
            "(`tracker stats` lists them)?"
        ) from error


async def import_untracked(
    channel: AbstractChannel, queue: str, *, dry_run: bool = False
) -> ImportReport:
    """Read ``queue``'s ``.dlq`` once and settle every message in it as described above
    (with ``dry_run``, only count and leave the queue as it was)."""
    check_queue(queue)
    report = ImportReport()
    source = await _source(channel, queue)
    underlay = await channel.get_underlay_channel()
    pending = int((await underlay.queue_declare(dlq_name(queue), passive=True)).message_count or 0)
    rejections = Rejections(queue)
    held: list[AbstractIncomingMessage] = []
    try:
        for _ in range(pending):
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
            envelope = to_envelope(queue, message)
            parsed = read(envelope)
            if not isinstance(parsed, TaskMessage):
                report.invalid += 1
                report.reasons.append(printable(parsed.reason, 200))
                if not dry_run:
                    await rejections.reject(envelope, parsed)
            elif await _known(parsed.execution_id, message):
                report.already_tracked += 1
            else:
                report.imported += 1
                if not dry_run:
                    await _record(queue, parsed, _death_reason(message))
            if not dry_run:
                held.pop()
                await message.ack()
    finally:
        for message in held:
            await message.nack(requeue=True)
    return report


async def _known(execution_id: str, message: AbstractIncomingMessage) -> bool:
    """Whether the tracker knows the message's execution already (see the module)."""
    if HEADER_ERROR_CATEGORY in (message.headers or {}):
        return True
    if await TaskTracker.find_one({"executionId": execution_id}) is not None:
        return True
    return await purged.was_purged(execution_id)


async def _record(queue: str, message: TaskMessage, reason: str) -> None:
    error = f"dead-lettered by RabbitMQ ({reason}) before it could be tracked"
    cause = (queue, ErrorCategory.INFRASTRUCTURE.value, DELIVERY_LIMIT_TYPE, error)
    created = await create_execution(
        message.task_id,
        queue,
        message.payload,
        execution_id=message.execution_id,
        status=TaskStatus.DLQ,
        history_message=f"imported from {dlq_name(queue)}",
        metadata={"importedFrom": dlq_name(queue), "deathReason": reason},
        fields={
            "errorMessage": error,
            "errorCategory": ErrorCategory.INFRASTRUCTURE.value,
            "errorType": DELIVERY_LIMIT_TYPE,
            "failedAt": utcnow(),
            "groupId": groups.group_id(*cause),
        },
    )
    if not created.deduplicated:
        await groups.noted(*cause, message.execution_id)
