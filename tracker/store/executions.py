"""Executions: creating them (with enqueue-time deduplication), finding them, waiting for
a task to finish, archiving a dead letter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import SortDirection
from pymongo.errors import DuplicateKeyError

from tracker.clock import new_execution_id, seconds
from tracker.constants import MESSAGE_VERSION
from tracker.errors import ConfigurationError, WaitTimeoutError
from tracker.lifecycle import FINAL_STATUSES, INITIAL_STATUSES, TaskStatus
from tracker.models import TaskTracker, in_attempt_order
from tracker.store import connection
from tracker.store.transitions import history_entry, transition
from tracker.validation import (
    check_count,
    check_id,
    check_metadata,
    check_optional_id,
    storable_text,
)

MAX_REASON_CHARS = 2048
# How many of a task's newest executions are read to find its last attempt.
LATEST_WINDOW = 20


@dataclass(frozen=True)
class Created:
    """An execution returned by ``create_execution``; ``deduplicated`` when it already
    existed (an active execution of the task, or a recent completion in the window)."""

    execution: TaskTracker
    deduplicated: bool


async def create_execution(
    task_id: str,
    queue_name: str,
    payload: Any = None,
    *,
    execution_id: str | None = None,
    status: TaskStatus = TaskStatus.QUEUED,
    metadata: dict[str, Any] | None = None,
    max_retries: int | None = None,
    retry_count: int = 0,
    message_version: str = MESSAGE_VERSION,
    dedupe_window: float | timedelta | None = None,
    history_message: str = "enqueued",
    enqueued_at: datetime | None = None,
    fields: dict[str, Any] | None = None,
) -> Created:
    """Insert a new execution of ``task_id``, unless the task already has an active one, in
    which case that one is returned with ``deduplicated=True``. With ``dedupe_window``, an
    execution completed within that window is returned the same way.

    The database decides: the insert sets ``activeKey`` under a unique partial index, so
    concurrent creations of one task yield exactly one active execution. ``enqueued_at``
    defaults to now; a retry passes the time its delay ends, when it enters the work queue.
    """
    check_id(task_id, "task_id")
    check_id(queue_name, "queue_name")
    check_optional_id(execution_id, "execution_id")
    check_count(retry_count, "retry_count")
    if max_retries is not None:
        check_count(max_retries, "max_retries")
    metadata = check_metadata(metadata)
    if status not in INITIAL_STATUSES:
        raise ConfigurationError(f"an execution cannot be created as {status.value!r}")
    if dedupe_window is not None:
        recent = await find_recent_completion(task_id, dedupe_window)
        if recent is not None:
            return Created(recent, deduplicated=True)
    if status.is_active and (unpatched := await _active_without_key(task_id)) is not None:
        return Created(unpatched, deduplicated=True)
    now = connection.server_clock().estimate()
    execution = TaskTracker(
        task_id=task_id,
        execution_id=execution_id or new_execution_id(),
        queue_name=queue_name,
        message_version=message_version,
        status=status,
        enqueued_at=enqueued_at or now,
        retry_count=retry_count,
        max_retries=max_retries,
        last_retry_at=now if retry_count > 0 else None,
        metadata=metadata or {},
        payload=payload,
        created_at=now,
        updated_at=now,
        active_key=task_id if status.is_active else None,
    )
    document = execution.to_document()
    document["history"] = [history_entry(status, now, history_message)]
    document.update(fields or {})
    for _ in range(3):
        try:
            await connection.collection().insert_one(document)
        except DuplicateKeyError:
            document.pop("_id", None)
            existing = await _find_conflict(task_id, execution.execution_id)
            if existing is not None:
                return Created(existing, deduplicated=True)
            # The conflicting execution finished between our insert and the lookup.
            continue
        return Created(TaskTracker.model_validate(document), deduplicated=False)
    raise ConfigurationError(f"could not create an execution of {task_id!r}: it keeps conflicting")


async def _find_conflict(task_id: str, execution_id: str) -> TaskTracker | None:
    """What an insert ran into: the same execution id (of this task or, under the default
    index set, another's), or the task's active execution."""
    same_execution = await TaskTracker.find_one({"executionId": execution_id})
    if same_execution is not None:
        return same_execution
    return await TaskTracker.find_one({"taskId": task_id, "activeKey": task_id})


async def _active_without_key(task_id: str) -> TaskTracker | None:
    """An active execution of ``task_id`` that has no ``activeKey``: written by a Node
    service without the Mongoose plugin, so the unique index cannot see it. It still makes
    the task active."""
    return await TaskTracker.find_one(
        {
            "taskId": task_id,
            "status": {"$in": [TaskStatus.QUEUED.value, TaskStatus.PROCESSING.value]},
            "activeKey": {"$exists": False},
        }
    )


async def find_recent_completion(task_id: str, window: float | timedelta) -> TaskTracker | None:
    """The latest completed execution of ``task_id`` if it completed within ``window``."""
    check_id(task_id, "task_id")
    latest = (
        await TaskTracker.find({"taskId": task_id, "status": TaskStatus.COMPLETED.value})
        .sort([("enqueuedAt", SortDirection.DESCENDING)])
        .limit(1)
        .to_list()
    )
    if not latest or latest[0].completed_at is None:
        return None
    since = connection.server_clock().estimate() - timedelta(seconds=seconds(window))
    return latest[0] if latest[0].completed_at > since else None


async def find_latest_execution(task_id: str) -> TaskTracker | None:
    """The last attempt of the task's newest chain of attempts."""
    check_id(task_id, "task_id")
    recent = (
        await TaskTracker.find({"taskId": task_id})
        .sort([("createdAt", SortDirection.DESCENDING)])
        .limit(LATEST_WINDOW)
        .to_list()
    )
    return in_attempt_order(recent[::-1])[-1] if recent else None


async def wait_until_complete(
    task_id: str, timeout: float | timedelta = 60.0, poll_interval: float = 0.2
) -> TaskTracker:
    """Wait until ``task_id``'s latest execution is final (completed, dlq or archived) and
    return it, as the query state machine's ``wait_until_complete`` does. A ``failed``
    execution is not final: a retry follows it. Raises ``WaitTimeoutError`` after ``timeout``."""
    check_id(task_id, "task_id")
    deadline = asyncio.get_running_loop().time() + seconds(timeout)
    while True:
        latest = await find_latest_execution(task_id)
        if latest is not None and latest.status in FINAL_STATUSES:
            return latest
        if asyncio.get_running_loop().time() >= deadline:
            state = latest.status.value if latest else "unknown"
            raise WaitTimeoutError(
                f"task {task_id!r} did not finish within {seconds(timeout)}s (last seen: {state})"
            )
        await asyncio.sleep(poll_interval)


async def archive(
    execution_id: str,
    *,
    reason: str,
    archived_by: str,
    retention: float | timedelta | None = None,
    fields: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> tuple[TaskStatus, bool]:
    """Archive a dead letter (dlq -> archived) with the Mongoose schema's reason and author;
    it is then deleted ``retention`` later by the TTL index (kept forever when None)."""
    check_id(archived_by, "archived_by")
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a string, not {type(reason).__name__}")
    reason = storable_text(reason, MAX_REASON_CHARS)
    fields = {**(fields or {}), "archivedReason": reason, "archivedBy": archived_by}
    if retention is not None:
        fields["expiresAt"] = connection.server_clock().estimate() + timedelta(
            seconds=seconds(retention)
        )
    return await transition(
        execution_id,
        TaskStatus.ARCHIVED,
        message=reason,
        worker=archived_by,
        fields=fields,
        task_id=task_id,
    )
