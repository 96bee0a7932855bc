"""Executions: finding them, waiting for a task to finish, archiving a dead letter
(``creation`` creates them)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from beanie import SortDirection

from tracker.clock import seconds
from tracker.errors import WaitTimeoutError
from tracker.lifecycle import FINAL_STATUSES, TaskStatus
from tracker.models import TaskTracker, in_attempt_order
from tracker.store import connection
from tracker.store.transitions import transition
from tracker.validation import (
    check_id,
    storable_text,
)

MAX_REASON_CHARS = 2048
# How many of a task's newest executions are read to find its last attempt.
LATEST_WINDOW = 20


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
