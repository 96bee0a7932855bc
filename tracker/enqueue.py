"""Enqueueing without a transport: create the execution, build its message, or undo it.
Both publishers (aio-pika and pika) are this plus a confirmed publish."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from tracker.constants import MAX_PAYLOAD_BYTES
from tracker.consumer import validate_queue_name
from tracker.delivery.envelope import OutgoingMessage, encode_payload, task_message
from tracker.errors import PublishError
from tracker.lifecycle import TaskStatus
from tracker.middleware import Middleware, run_hooks
from tracker.store import connection
from tracker.store.executions import create_execution

log = structlog.get_logger("tracker.publisher")


@dataclass(frozen=True)
class EnqueueResult:
    """``deduplicated``: the task already had an active execution (or a completion within
    the dedupe window); nothing was published and ``execution_id`` is that execution's."""

    task_id: str
    execution_id: str
    deduplicated: bool
    status: TaskStatus


async def prepare(
    queue: str,
    payload: Any,
    task_id: str | None,
    metadata: dict[str, Any] | None,
    max_retries: int | None,
    dedupe_window: float | timedelta | None,
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    middleware: tuple[Middleware, ...] = (),
) -> tuple[EnqueueResult, OutgoingMessage | None]:
    """Create the queued execution; the message to publish, or None when deduplicated."""
    validate_queue_name(queue)
    connection.collection()  # fail before anything is written if the store is not connected
    body = encode_payload(payload, max_payload_bytes)
    task_id = task_id or f"{queue}:{uuid.uuid4()}"
    created = await create_execution(
        task_id,
        queue,
        payload,
        metadata=metadata,
        max_retries=max_retries,
        dedupe_window=dedupe_window,
    )
    execution = created.execution
    await run_hooks(middleware, "on_enqueued", queue, execution, created.deduplicated)
    result = EnqueueResult(
        task_id=execution.task_id,
        execution_id=execution.execution_id,
        deduplicated=created.deduplicated,
        status=execution.status,
    )
    if created.deduplicated:
        log.info("enqueue deduplicated", task_id=task_id, execution_id=execution.execution_id)
        return result, None
    message = task_message(
        queue, body, task_id=task_id, execution_id=execution.execution_id, max_retries=max_retries
    )
    return result, message


async def roll_back(queue: str, result: EnqueueResult, cause: BaseException) -> PublishError:
    """Remove the still-queued execution whose message the broker did not take, and return
    the error to raise: enqueueing again is then safe."""
    await connection.collection().delete_one(
        {"executionId": result.execution_id, "status": TaskStatus.QUEUED.value}
    )
    return PublishError(
        f"the broker did not accept the message for {queue!r} ({cause}); the execution "
        f"{result.execution_id} was rolled back, enqueueing again is safe"
    )
