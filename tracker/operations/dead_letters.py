"""Operations on dead letters, free of any transport: select (by id, queue, category, age
or failure group), retry, archive, purge. The CLI formats these; messages to publish go to
``publish``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from beanie import SortDirection

from tracker.clock import seconds, utcnow
from tracker.delivery.envelope import OutgoingMessage, encode_payload, task_message
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.executions import archive, create_execution
from tracker.validation import check_count, check_id, check_optional_id

MANUAL_RETRY_REASON = "Manual retry initiated"
Publish = Callable[[OutgoingMessage], Awaitable[None]]


@dataclass(frozen=True)
class Selection:
    """Which dead letters: by id, or by queue, category, minimum age and failure group."""

    execution_ids: Sequence[str] = ()
    queue: str | None = None
    category: str | None = None
    older_than: float | None = None
    group: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.execution_ids, str | bytes) or not isinstance(
            self.execution_ids, Sequence
        ):
            raise TypeError("execution_ids must be a sequence of ids")
        for execution_id in self.execution_ids:
            check_id(execution_id, "execution id")
        check_optional_id(self.queue, "queue")
        check_optional_id(self.group, "group")
        if self.category is not None:
            ErrorCategory(check_id(self.category, "category"))
        if self.older_than is not None:
            seconds(self.older_than)
        if self.limit is not None:
            check_count(self.limit, "limit")

    @property
    def by_id(self) -> bool:
        return bool(self.execution_ids)


def _query(selection: Selection, status: TaskStatus = TaskStatus.DLQ) -> dict[str, Any]:
    query: dict[str, Any] = {"status": status.value}
    if selection.by_id:
        query["executionId"] = {"$in": list(selection.execution_ids)}
        return query
    if selection.group:
        query["groupId"] = selection.group
    if selection.queue:
        query["queueName"] = selection.queue
    if selection.category:
        query["errorCategory"] = selection.category
    if selection.older_than is not None:
        query["enqueuedAt"] = {"$lt": utcnow() - timedelta(seconds=selection.older_than)}
    return query


async def select(selection: Selection) -> AsyncIterator[TaskTracker]:
    """The dead letters of ``selection``, newest first (by enqueue within a queue, by when
    they were dead-lettered within a failure group, else by their last change: the sort each
    index serves)."""
    query = _query(selection)
    order = "failedAt" if selection.group else "enqueuedAt" if selection.queue else "updatedAt"
    cursor = TaskTracker.find(query).sort([(order, SortDirection.DESCENDING)])
    if selection.limit is not None:
        cursor = cursor.limit(selection.limit)
    async for entry in cursor:
        yield entry


async def missing_ids(execution_ids: Sequence[str]) -> list[str]:
    """Those of ``execution_ids`` that are not dead letters (unknown, or in another status)."""
    found = {
        doc.execution_id
        async for doc in TaskTracker.find(
            {"executionId": {"$in": list(execution_ids)}, "status": TaskStatus.DLQ.value}
        )
    }
    return [eid for eid in execution_ids if eid not in found]


RetryOutcome = Literal["retried", "refused", "failed"]


@dataclass(frozen=True)
class RetryResult:
    execution_id: str
    task_id: str
    outcome: RetryOutcome
    new_execution_id: str | None = None
    reason: str = ""


async def retry(
    entry: TaskTracker, publish: Publish, *, archived_by: str, retention: float | None
) -> RetryResult:
    """Enqueue a new execution of the entry's task (same taskId, next retryCount, a fresh
    retry budget), publish it, then archive the entry with "Manual retry initiated". Refused
    when the task already has an active execution; nothing changes then."""
    budget = entry.max_retries if entry.max_retries is not None else 0
    retry_count = entry.retry_count + 1
    created = await create_execution(
        entry.task_id,
        entry.queue_name,
        entry.payload,
        retry_count=retry_count,
        max_retries=retry_count + budget,
        metadata=entry.metadata,
        message_version=entry.message_version,
        history_message=f"manual retry of {entry.execution_id}",
    )
    new = created.execution
    if created.deduplicated:
        return RetryResult(
            entry.execution_id,
            entry.task_id,
            "refused",
            new.execution_id,
            f"the task already has an active execution {new.execution_id} ({new.status.value})",
        )
    message = task_message(
        entry.queue_name,
        encode_payload(new.payload),
        task_id=new.task_id,
        execution_id=new.execution_id,
        retry_count=new.retry_count,
        max_retries=new.max_retries,
    )
    try:
        await publish(message)
    except Exception as exc:
        await connection.collection().delete_one(
            {"executionId": new.execution_id, "status": TaskStatus.QUEUED.value}
        )
        return RetryResult(
            entry.execution_id, entry.task_id, "failed", None, f"publish failed: {exc}"
        )
    await archive(
        entry.execution_id,
        reason=MANUAL_RETRY_REASON,
        archived_by=archived_by,
        retention=retention,
        fields={"nextExecutionId": new.execution_id},
    )
    return RetryResult(entry.execution_id, entry.task_id, "retried", new.execution_id)


async def purge_archived(older_than: float | timedelta, *, dry_run: bool = False) -> int:
    """Delete archived entries archived more than ``older_than`` ago (an archived document is
    not written after its archiving, so ``updatedAt`` is its archive time)."""
    query = {
        "status": TaskStatus.ARCHIVED.value,
        "updatedAt": {"$lt": utcnow() - timedelta(seconds=seconds(older_than))},
    }
    if dry_run:
        return await connection.collection().count_documents(query)
    result = await connection.collection().delete_many(query)
    return result.deleted_count
