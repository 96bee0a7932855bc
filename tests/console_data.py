"""Records for the console's tests, written as the service writes them: dead letters with
their failure group, some carrying hostile text (markup, control characters, huge values)."""

from __future__ import annotations

from typing import Any

from tracker.clock import utcnow
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import HistoryEntry, TaskTracker
from tracker.operations import groups

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>\x1b[2J\x00' + "é" * 5
HUGE = "h" * 200_000


async def dead_letter(
    queue: str,
    task_id: str,
    message: str = "partner refused order 17",
    payload: Any = None,
    metadata: dict[str, Any] | None = None,
) -> TaskTracker:
    """A dead-lettered execution of ``task_id`` and the group it belongs to."""
    now = utcnow()
    doc = TaskTracker(
        task_id=task_id,
        queue_name=queue,
        status=TaskStatus.DLQ,
        failed_at=now,
        error_message=message,
        error_category=ErrorCategory.PROCESSING,
        error_type="ProcessingError",
        error_stack="Traceback: " + message,
        payload={"order": 17, "card": "4111-1111-1111-1111"} if payload is None else payload,
        metadata=metadata or {},
        history=[
            HistoryEntry(status=TaskStatus.QUEUED, at=now, message="enqueued"),
            HistoryEntry(status=TaskStatus.DLQ, at=now, message=message),
        ],
    )
    await doc.insert()
    group_id = await groups.note_dead_letter(
        queue, "processing", "ProcessingError", message, doc.execution_id, now
    )
    doc.group_id = group_id
    await doc.save()
    return doc
