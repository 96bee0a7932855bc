"""A report as its client sees it: the seed's three statuses, read from the tracker's records.

A report is a task; each request that is not deduplicated starts a run of it (an execution
and its retries). The client sees the newest run: RUNNING while an attempt is queued, running
or has failed with a retry to follow, SUCCESS once one completed, FAIL once the run was
dead-lettered (retries spent, bad input, "make report timeout") or archived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Literal

from beanie import SortDirection

from consumers.report_request import FORMATS
from tracker.clock import utcnow
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker, in_attempt_order
from tracker.validation import check_id

Status = Literal["RUNNING", "SUCCESS", "FAIL"]
RUNNING: Final = "RUNNING"
SUCCESS: Final = "SUCCESS"
FAIL: Final = "FAIL"
SEED_STATUS: Final[Mapping[TaskStatus, Status]] = MappingProxyType(
    {
        TaskStatus.QUEUED: RUNNING,
        TaskStatus.PROCESSING: RUNNING,
        TaskStatus.FAILED: RUNNING,  # this attempt failed; its retry follows
        TaskStatus.COMPLETED: SUCCESS,
        TaskStatus.DLQ: FAIL,
        TaskStatus.ARCHIVED: FAIL,
    }
)
# A run's executions are among the task's newest (a run has at most max_retries + 1).
NEWEST: Final = 20
# A failed attempt whose retry is not stored this long after is the tail of a run whose later
# records retention removed (failed attempts are kept longer than completions), not a retry
# about to be created: the report is gone.
ORPHANED_AFTER: Final = timedelta(days=1)


@dataclass(frozen=True)
class Report:
    """The newest run of report ``id``; ``execution`` is its latest attempt."""

    id: str
    status: Status
    error: str | None
    attempts: int
    format: str | None
    created_at: datetime
    finished_at: datetime | None
    execution: TaskTracker

    def view(self) -> dict[str, Any]:
        """The client's JSON: ``error`` with FAIL only, ``finished_at`` once finished."""
        shown: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.status == FAIL and self.error is not None:
            shown["error"] = self.error
        shown |= {"attempts": self.attempts, "format": self.format, "created_at": self.created_at}
        if self.finished_at is not None:
            shown["finished_at"] = self.finished_at
        return shown


def _format_of(execution: TaskTracker) -> str | None:
    payload = execution.payload
    fmt = payload.get("format", "csv") if isinstance(payload, dict) else None
    return fmt if isinstance(fmt, str) and fmt in FORMATS else None


def _finished_at(execution: TaskTracker, status: Status) -> datetime | None:
    if status == SUCCESS:
        return execution.completed_at
    if status == FAIL:
        return execution.failed_at or execution.archived_at or execution.updated_at
    return None


async def find_report(report_id: str, queue: str) -> Report | None:
    """Report ``report_id`` of ``queue`` as it stands, or None when there is no such report
    (never requested, another queue's task, or removed by retention)."""
    check_id(report_id, "report id")
    newest = (
        await TaskTracker.find({"taskId": report_id})
        .sort([("createdAt", SortDirection.DESCENDING)])
        .limit(NEWEST)
        .to_list()
    )
    if not newest:
        return None
    ordered = in_attempt_order(newest[::-1])
    latest = ordered[-1]
    if latest.queue_name != queue:
        return None
    # A failed latest attempt is one whose retry is not (or no longer) stored.
    failed_at = latest.failed_at if latest.status is TaskStatus.FAILED else None
    if failed_at is not None and failed_at < utcnow() - ORPHANED_AFTER:
        return None
    retried = {e.next_execution_id: e for e in ordered if e.next_execution_id is not None}
    first, attempts = latest, 1
    while (earlier := retried.get(first.execution_id)) is not None and attempts < NEWEST:
        first, attempts = earlier, attempts + 1
    status = SEED_STATUS[latest.status]
    return Report(
        id=report_id,
        status=status,
        error=latest.error_message,
        attempts=attempts,
        format=_format_of(latest),
        created_at=first.created_at,
        finished_at=_finished_at(latest, status),
        execution=latest,
    )
