"""Bringing into the tracker the messages RabbitMQ dead-lettered without a tracker record
(a delivery limit reached while MongoDB was down), so no failure stays invisible."""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from tracker.clock import utcnow
from tracker.constants import dlq_name
from tracker.delivery.envelope import TaskMessage, read
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.rabbit.aio_transport import to_envelope
from tracker.store.executions import create_execution

DELIVERY_LIMIT_TYPE = "DeliveryLimitExceeded"


@dataclass
class ImportReport:
    imported: int = 0
    already_tracked: int = 0


def _death_reason(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    reason = headers.get("x-first-death-reason")
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return str(reason or "unknown")


async def import_untracked(
    channel: AbstractChannel, queue: str, *, dry_run: bool = False
) -> ImportReport:
    """Read ``queue``'s ``.dlq`` once; record each message that has no tracker record as a
    ``dlq`` execution (payload kept) and remove it from the queue. Messages that already have
    a record (the tracker's own copies) are left where they are."""
    report = ImportReport()
    source = await channel.declare_queue(dlq_name(queue), passive=True)
    underlay = await channel.get_underlay_channel()
    pending = int((await underlay.queue_declare(dlq_name(queue), passive=True)).message_count or 0)
    held: list[AbstractIncomingMessage] = []
    try:
        for _ in range(pending):
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            envelope = to_envelope(queue, message)
            parsed = read(envelope)
            if await TaskTracker.find_execution(parsed.execution_id) is not None:
                report.already_tracked += 1
                held.append(message)
                continue
            report.imported += 1
            if dry_run:
                held.append(message)
                continue
            reason = _death_reason(message)
            await create_execution(
                parsed.task_id,
                queue,
                parsed.payload if isinstance(parsed, TaskMessage) else None,
                execution_id=parsed.execution_id,
                status=TaskStatus.DLQ,
                history_message=f"imported from {dlq_name(queue)}",
                metadata={"importedFrom": dlq_name(queue), "deathReason": reason},
                fields={
                    "errorMessage": (
                        f"dead-lettered by RabbitMQ ({reason}) before it could be tracked"
                    ),
                    "errorCategory": ErrorCategory.INFRASTRUCTURE.value,
                    "errorType": DELIVERY_LIMIT_TYPE,
                    "failedAt": utcnow(),
                },
            )
            await message.ack()
    finally:
        for message in held:
            await message.nack(requeue=True)
    return report
