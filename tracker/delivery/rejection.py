"""Deliveries that break the message contract: recorded once as dead letters (category
``validation``, with the reason), copied to ``.dlq`` and acked, so the consumer goes on."""

from __future__ import annotations

from typing import Any

import structlog

from tracker.clock import utcnow
from tracker.constants import dlq_name
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope, InvalidMessage, dead_letter_copy
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Middleware, run_hooks
from tracker.models import TaskTracker
from tracker.store import transitions
from tracker.store.executions import create_execution

log = structlog.get_logger("tracker.rejection")
# The errorType of a delivery that broke the message contract.
REJECTED_TYPE = "InvalidMessage"


class Rejections:
    """Records the rejected deliveries of ``queue``."""

    def __init__(self, queue: str, worker_id: str, middleware: tuple[Middleware, ...] = ()):
        self.queue = queue
        self.worker_id = worker_id
        self.middleware = middleware

    async def reject_unknown(
        self, envelope: Envelope, message: InvalidMessage
    ) -> Decision | TaskTracker:
        """Record a delivery with no record that breaks the contract as a dead letter; the
        existing execution when one with its id appeared meanwhile (a duplicate)."""
        created = await create_execution(
            message.task_id,
            self.queue,
            None,
            execution_id=message.execution_id,
            status=TaskStatus.DLQ,
            history_message=message.reason,
            metadata={"rawBodyPreview": envelope.body[:512].decode("utf-8", errors="replace")},
            fields={**rejection_fields(message), "failedAt": utcnow()},
        )
        if created.deduplicated:
            return created.execution
        return await self._rejected(envelope, message)

    async def reject_claimed(
        self, envelope: Envelope, message: InvalidMessage, token: str
    ) -> Decision:
        """Dead-letter the execution this worker claimed for a delivery that breaks the
        contract."""
        await transitions.transition(
            message.execution_id,
            TaskStatus.DLQ,
            claim_token=token,
            message=message.reason,
            worker=self.worker_id,
            fields=rejection_fields(message),
        )
        return await self._rejected(envelope, message)

    async def _rejected(self, envelope: Envelope, message: InvalidMessage) -> Decision:
        log.warning(
            "message rejected",
            queue=self.queue,
            task_id=message.task_id,
            execution_id=message.execution_id,
            reason=message.reason,
        )
        await run_hooks(self.middleware, "on_rejected", envelope, message.reason)
        copy = dead_letter_copy(
            envelope, dlq_name(self.queue), ErrorCategory.VALIDATION.value, message.reason
        )
        return Decision("rejected", publish=(copy,), execution_id=message.execution_id)


def rejection_fields(message: InvalidMessage) -> dict[str, Any]:
    return {
        "errorMessage": message.reason,
        "errorCategory": ErrorCategory.VALIDATION.value,
        "errorType": REJECTED_TYPE,
    }
