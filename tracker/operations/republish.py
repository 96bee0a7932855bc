"""A dead letter's task run again: what a retry, an edit-and-retry and a replay share.

The new execution is the next attempt of the task (same ``taskId``, next ``retryCount``, a
fresh retry budget) and names the dead letter it came from (``sourceExecutionId``). It is
published with the broker's confirm; once published, the dead letter is archived with the
Mongoose schema's reason "Manual retry initiated" and a link to it (``nextExecutionId``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from tracker.clock import utcnow
from tracker.constants import DEFAULT_ARCHIVED_RETENTION_SECONDS
from tracker.delivery.envelope import OutgoingMessage, encode_stored_payload, task_message
from tracker.errors import InvalidTransitionError, PublishError, TaskNotFoundError
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.creation import Created, create_execution
from tracker.store.executions import archive

MANUAL_RETRY_REASON: Final = "Manual retry initiated"
Publish = Callable[[OutgoingMessage], Awaitable[None]]
# The payload argument's default: the dead letter's own.
SAME: Final[Any] = object()


async def new_execution(
    source: TaskTracker,
    *,
    execution_id: str | None = None,
    payload: Any = SAME,
    fields: dict[str, Any] | None = None,
    note: str | None = None,
) -> Created:
    """Create the next execution of ``source``'s task (``deduplicated`` when the task
    already has an active one, or ``execution_id`` exists)."""
    budget = source.max_retries if source.max_retries is not None else 0
    retry_count = source.retry_count + 1
    return await create_execution(
        source.task_id,
        source.queue_name,
        source.payload if payload is SAME else payload,
        execution_id=execution_id,
        retry_count=retry_count,
        max_retries=retry_count + budget,
        metadata=source.metadata,
        message_version=source.message_version,
        history_message=note or f"manual retry of {source.execution_id}",
        fields={"sourceExecutionId": source.execution_id, **(fields or {})},
    )


def message_of(execution: TaskTracker) -> OutgoingMessage:
    """The message that runs ``execution``."""
    return task_message(
        execution.queue_name,
        encode_stored_payload(execution.payload),
        task_id=execution.task_id,
        execution_id=execution.execution_id,
        retry_count=execution.retry_count,
        max_retries=execution.max_retries,
    )


async def publish_execution(execution: TaskTracker, publish: Publish) -> bool:
    """Publish ``execution``'s message. True when the broker confirmed it; False when it may
    hold it (a lost confirm: the execution is marked ``publishUnconfirmedAt`` so the sweeper
    publishes it again). When the broker certainly does not hold it, the queued execution is
    removed and ``PublishError`` raised: creating it again is safe."""
    try:
        await publish(message_of(execution))
    except PublishError as error:
        if error.maybe_published:
            now = utcnow()
            await connection.collection().update_one(
                {
                    "taskId": execution.task_id,
                    "executionId": execution.execution_id,
                    "status": TaskStatus.QUEUED.value,
                },
                {"$set": {"publishUnconfirmedAt": now, "updatedAt": now}},
            )
            return False
        await connection.collection().delete_one(
            {
                "taskId": execution.task_id,
                "executionId": execution.execution_id,
                "status": TaskStatus.QUEUED.value,
            }
        )
        raise
    return True


async def archive_sources(
    execution_ids: Iterable[str],
    *,
    next_execution_id: str,
    archived_by: str,
    retention: float | None = DEFAULT_ARCHIVED_RETENTION_SECONDS,
) -> set[str]:
    """Archive the dead letters ``execution_ids`` as retried by ``next_execution_id``; the
    failure groups they belonged to (to settle). One archived or retried meanwhile is left
    as it is."""
    groups: set[str] = set()
    for execution_id in execution_ids:
        try:
            await archive(
                execution_id,
                reason=MANUAL_RETRY_REASON,
                archived_by=archived_by,
                retention=retention,
                fields={"nextExecutionId": next_execution_id},
            )
        except (InvalidTransitionError, TaskNotFoundError):
            continue
        found = await connection.collection().find_one(
            {"executionId": execution_id}, projection={"groupId": 1}
        )
        if found is not None and found.get("groupId"):
            groups.add(str(found["groupId"]))
    return groups
