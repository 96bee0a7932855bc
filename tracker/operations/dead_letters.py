"""Operations on dead letters: select (by id, queue, category, age or failure group),
archive and purge, audited. Running them again is a replay (``replays``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from beanie import SortDirection

from tracker.clock import seconds, utcnow
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.operations import audit, groups, pages, purged
from tracker.operations.actors import Actor
from tracker.store import connection
from tracker.store.executions import archive
from tracker.validation import check_count, check_id, check_optional_id

PURGE_BATCH = 1000


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
        if self.limit is not None and check_count(self.limit, "limit") < 1:
            # A limit of 0 would be MongoDB's "no limit".
            raise ValueError("limit must be at least 1")

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


async def count_matching(selection: Selection) -> int:
    """How many dead letters ``selection`` matches, its limit aside (``pages.count``)."""
    return await pages.count(connection.collection(), _query(selection))


async def missing_ids(execution_ids: Sequence[str]) -> list[str]:
    """Those of ``execution_ids`` that are not dead letters (unknown, or in another status)."""
    found = {
        doc.execution_id
        async for doc in TaskTracker.find(
            {"executionId": {"$in": list(execution_ids)}, "status": TaskStatus.DLQ.value}
        )
    }
    return [eid for eid in execution_ids if eid not in found]


@dataclass(frozen=True)
class Archived:
    execution_id: str
    task_id: str
    changed: bool


async def archive_dead_letters(
    entries: Sequence[TaskTracker],
    *,
    actor: Actor,
    reason: str,
    retention: float | None,
    selection: dict[str, Any] | None = None,
) -> list[Archived]:
    """Archive ``entries`` with ``reason`` (``archivedBy``: the actor), then resolve the
    failure groups none of whose dead letters is left. Audited as one ``archive`` action."""
    actor.require_operator()
    results = []
    async with audit.audited(
        actor, "archive", "dead-letters", selection=selection, reason=reason
    ) as outcome:
        for entry in entries:
            _, changed = await archive(
                entry.execution_id,
                reason=reason,
                archived_by=actor.name,
                retention=retention,
                task_id=entry.task_id,
            )
            results.append(Archived(entry.execution_id, entry.task_id, changed))
        outcome.result["archived"] = sum(r.changed for r in results)
        outcome.result["execution_ids"] = [r.execution_id for r in results][:100]
        await groups.settle(e.group_id for e in entries if e.group_id)
    return results


async def purge_archived(
    older_than: float | timedelta, *, dry_run: bool = False, actor: Actor | None = None
) -> int:
    """Delete archived entries archived more than ``older_than`` ago (an archived document is
    not written after its archiving, so ``updatedAt`` is its archive time), each noted as
    purged first (``purged``); with ``actor``, audited as ``purge``."""
    query = {
        "status": TaskStatus.ARCHIVED.value,
        "updatedAt": {"$lt": utcnow() - timedelta(seconds=seconds(older_than))},
    }
    if dry_run:
        return await connection.collection().count_documents(query)
    if actor is None:
        return await _delete(query)
    actor.require_operator()
    selection = {"archived_older_than_seconds": seconds(older_than)}
    async with audit.audited(actor, "purge", "archived", selection=selection) as outcome:
        deleted = await _delete(query)
        outcome.result["deleted"] = deleted
    return deleted


async def _delete(query: dict[str, Any]) -> int:
    """Delete what ``query`` matches a batch at a time, each batch noted as purged first."""
    deleted = 0
    while True:
        batch = (
            await connection.collection()
            .find(query, projection={"_id": 1, "executionId": 1})
            .limit(PURGE_BATCH)
            .to_list(PURGE_BATCH)
        )
        if not batch:
            return deleted
        await purged.remember([doc["executionId"] for doc in batch if "executionId" in doc])
        result = await connection.collection().delete_many(
            {**query, "_id": {"$in": [doc["_id"] for doc in batch]}}
        )
        deleted += result.deleted_count
