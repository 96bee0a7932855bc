"""Deliveries that break the message contract: recorded once as dead letters (category
``validation``, with the reason and the raw body), acked, and the consumer goes on.

A bad copy of an execution's own message (its ids name an execution of that task in that
queue, which the worker could claim) dead-letters that execution. Any other rejected
delivery owns no execution: its record has an id derived from the delivery itself (queue
and message id, or a hash of body and headers when there is none), so its redeliveries find
the same record instead of making new ones; the ids it claims are kept in
``claimedTaskId``/``claimedExecutionId``, and an execution they name is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import structlog

from tracker.clock import utcnow
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope, InvalidMessage
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Hooks, Middleware
from tracker.models import TaskTracker
from tracker.operations import groups
from tracker.store import transitions
from tracker.store.creation import create_execution
from tracker.validation import id_problem, printable, storable_text

log = structlog.get_logger("tracker.rejection")
# The errorType of a delivery that broke the message contract.
REJECTED_TYPE = "InvalidMessage"
# What a rejected delivery's record keeps of it.
MAX_RAW_BODY_BYTES = 64 * 1024
MAX_KEPT_HEADERS = 32


class Rejections:
    """Records the rejected deliveries of ``queue``."""

    def __init__(self, queue: str, middleware: tuple[Middleware, ...] = ()) -> None:
        self.queue = queue
        self.hooks = Hooks(middleware)

    async def reject(
        self,
        envelope: Envelope,
        message: InvalidMessage,
        category: ErrorCategory = ErrorCategory.VALIDATION,
    ) -> Decision | TaskTracker:
        """Record the delivery as a dead letter (``validation``: it breaks the contract;
        ``infrastructure``: the store refused it); the record already made for an earlier
        delivery of it when there is one (then it is a duplicate)."""
        record_id = rejection_id(envelope)
        cause = (self.queue, category.value, REJECTED_TYPE, storable_text(message.reason, 2048))
        fields: dict[str, Any] = {
            "errorMessage": cause[3],
            "groupId": groups.group_id(*cause),
            "errorCategory": category.value,
            "errorType": REJECTED_TYPE,
            "failedAt": utcnow(),
            "rawBody": envelope.body[:MAX_RAW_BODY_BYTES],
        }
        if message.task_id is not None:
            fields["claimedTaskId"] = message.task_id
        if message.execution_id is not None:
            fields["claimedExecutionId"] = message.execution_id
        created = await create_execution(
            f"{self.queue}:rejected:{record_id.removeprefix('rejected:')}",
            self.queue,
            None,
            execution_id=record_id,
            status=TaskStatus.DLQ,
            history_message=storable_text(message.reason, 2048),
            metadata={"headers": kept_headers(envelope.headers)},
            fields=fields,
        )
        if created.deduplicated:
            return created.execution
        await groups.noted(*cause, record_id)
        return await self._rejected(envelope, message, record_id)

    async def reject_claimed(
        self, envelope: Envelope, message: InvalidMessage, token: str
    ) -> Decision:
        """Dead-letter the execution this worker claimed for a delivery of it that breaks
        the contract (a corrupted or incompatible copy of its own message)."""
        assert message.execution_id is not None
        reason = storable_text(message.reason, 2048)
        cause = (self.queue, ErrorCategory.VALIDATION.value, REJECTED_TYPE, reason)
        _, changed = await transitions.transition(
            message.execution_id,
            TaskStatus.DLQ,
            claim_token=token,
            message=reason,
            fields={
                "errorMessage": reason,
                "errorCategory": ErrorCategory.VALIDATION.value,
                "errorType": REJECTED_TYPE,
                "groupId": groups.group_id(*cause),
            },
        )
        if changed:
            await groups.noted(*cause, message.execution_id)
        return await self._rejected(envelope, message, message.execution_id)

    async def _rejected(
        self, envelope: Envelope, message: InvalidMessage, execution_id: str
    ) -> Decision:
        log.warning(
            "message rejected",
            queue=self.queue,
            execution_id=execution_id,
            claimed_execution_id=message.execution_id,
            reason=printable(message.reason),
        )
        await self.hooks.run("on_rejected", envelope, message.reason)
        return Decision("rejected", execution_id=execution_id)


def rejection_id(envelope: Envelope) -> str:
    """The record id of a rejected delivery: its queue and message id, or, without a usable
    message id, its body and headers."""
    digest = hashlib.sha256(envelope.queue.encode("utf-8", "backslashreplace") + b"\x00")
    if envelope.message_id is not None and id_problem(envelope.message_id) is None:
        digest.update(b"message-id\x00" + envelope.message_id.encode())
    else:
        digest.update(b"body\x00" + envelope.body + b"\x00")
        digest.update(repr(kept_headers(envelope.headers)).encode("utf-8", "backslashreplace"))
    return f"rejected:{digest.hexdigest()[:32]}"


def kept_headers(headers: Mapping[Any, Any]) -> list[list[str]]:
    """The delivery's headers as [name, value] pairs of printable text, bounded (names may
    hold anything, so they are not used as field names)."""
    pairs = []
    for name, value in list(headers.items())[:MAX_KEPT_HEADERS]:
        pairs.append([printable(_text(name), 200), printable(_text(value), 500)])
    return sorted(pairs)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
