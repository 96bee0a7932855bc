"""One replay item at a time: republishing it (at most one new execution, whoever resumes
it), and following its new execution through its retries to ``succeeded`` or ``failed``."""

from __future__ import annotations

import uuid
from typing import Any, Final

from tracker.errors import PublishError
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.operations import groups
from tracker.operations.pages import MAX_POSITION
from tracker.operations.replay_jobs import ReplayJob, items_collection, jobs_collection
from tracker.operations.republish import (
    Publish,
    archive_sources,
    new_execution,
    publish_execution,
)
from tracker.store import connection
from tracker.validation import storable_text

# Publishing an item is tried this many times (the broker refusing it) before it is skipped.
MAX_ATTEMPTS: Final = 3
# Retries followed from a republished execution before its outcome is left open.
MAX_HOPS: Final = 50
FOLLOW_BATCH: Final = 100
_FOLLOWED = {"status": 1, "nextExecutionId": 1, "errorMessage": 1}


async def next_pending(job_id: str, below: int | None = None) -> dict[str, Any] | None:
    """The job's first pending item (among the first ``below``, for a canary)."""
    found: dict[str, Any] | None = await items_collection().find_one(
        {"replayId": job_id, "outcome": "pending", "position": _before(below)},
        sort=[("position", 1)],
    )
    return found


async def run_item(job: ReplayJob, item: dict[str, Any], publish: Publish) -> str:
    """Republish ``item``: its new execution created (unless it exists: a resumed item),
    published (unless it already was), its dead letters archived. The item's outcome now:
    ``republished``, ``skipped``, or ``pending`` when the broker refused the message and
    it is to be tried again."""
    source = await TaskTracker.find_execution(item["executionId"])
    new_id = item.get("newExecutionId")
    if new_id is None:
        selected = job.selection.status or TaskStatus.DLQ
        if source is None:
            return await _settle(item, "skipped", "the dead letter is gone (archived and purged)")
        if source.status is not selected:
            detail = f"no longer {selected.value}: {source.status.value}"
            return await _settle(item, "skipped", detail)
        new_id = await _choose_id(item)
        if new_id is None:
            return "skipped"  # another runner finished it meanwhile
    execution = await TaskTracker.find_execution(new_id)
    if execution is None:
        if source is None:
            return await _settle(item, "skipped", "the dead letter is gone (archived and purged)")
        created = await new_execution(
            source,
            execution_id=new_id,
            fields={"replayId": job.id},
            note=f"replay {job.id} of {source.execution_id}",
        )
        execution = created.execution
        if execution.execution_id != new_id:
            detail = (
                f"the task already has an active execution {execution.execution_id} "
                f"({execution.status.value})"
            )
            return await _settle(item, "skipped", detail)
    if execution.status is TaskStatus.QUEUED and item.get("publishedAt") is None:
        try:
            await publish_execution(execution, publish)
        except PublishError as error:
            return await _refused(item, error)
        await items_collection().update_one(
            {"_id": item["_id"]}, {"$set": {"publishedAt": connection.server_clock().estimate()}}
        )
    if (job.selection.status or TaskStatus.DLQ) is TaskStatus.DLQ:
        touched = await archive_sources(
            [item["executionId"], *item.get("supersedes", ())],
            next_execution_id=new_id,
            archived_by=job.created_by,
            retention=job.archived_retention,
        )
        await groups.settle(touched)
    now = connection.server_clock().estimate()
    await jobs_collection().update_one({"_id": job.id}, {"$set": {"lastRepublishAt": now}})
    return await _settle(item, "republished", None, newExecutionId=new_id)


async def follow(job_id: str, below: int | None = None) -> bool:
    """Settle the job's republished items whose execution (or its last retry) has ended;
    True when none is left to follow (among the first ``below``)."""
    query = {"replayId": job_id, "outcome": "republished", "position": _before(below)}
    batch = (
        await items_collection()
        .find(query, sort=[("position", 1)])
        .limit(FOLLOW_BATCH)
        .to_list(FOLLOW_BATCH)
    )
    for item in batch:
        ended = await _end_of(item["newExecutionId"])
        if ended is not None:
            await _settle(item, *ended, expected="republished")
    left: int = await items_collection().count_documents(query)
    return left == 0


async def canary_counts(job_id: str, size: int) -> dict[str, int]:
    """The outcomes of the job's first ``size`` items."""
    return {
        outcome: await items_collection().count_documents(
            {"replayId": job_id, "outcome": outcome, "position": _before(size)}
        )
        for outcome in ("republished", "succeeded", "failed", "skipped")
    }


async def _end_of(execution_id: str) -> tuple[str, str | None] | None:
    """How a republished execution ended, through its retries: ``succeeded``, or
    ``failed`` with the error; None while it (or a retry) still runs."""
    current: str | None = execution_id
    for _ in range(MAX_HOPS):
        if current is None:
            return None
        doc = await connection.collection().find_one({"executionId": current}, projection=_FOLLOWED)
        if doc is None:
            return "failed", "its execution is gone (retention)"
        status = TaskStatus(doc["status"])
        if status is TaskStatus.COMPLETED:
            return "succeeded", None
        retried = doc.get("nextExecutionId") is not None
        if status is TaskStatus.DLQ or (status is TaskStatus.ARCHIVED and not retried):
            return "failed", storable_text(str(doc.get("errorMessage") or status.value), 500)
        if status.is_active:
            return None
        current = doc.get("nextExecutionId")
    return None


async def _choose_id(item: dict[str, Any]) -> str | None:
    """Store the item's new execution id before the execution exists; the id stored (ours,
    or the one another runner stored first), None if the item is no longer pending."""
    new_id = str(uuid.uuid4())
    await items_collection().update_one(
        {"_id": item["_id"], "outcome": "pending", "newExecutionId": None},
        {"$set": {"newExecutionId": new_id}},
    )
    current = await items_collection().find_one({"_id": item["_id"]})
    if current is None or current["outcome"] != "pending":
        return None
    chosen: str = current["newExecutionId"]
    return chosen


async def _refused(item: dict[str, Any], error: PublishError) -> str:
    attempts = int(item.get("attempts", 0)) + 1
    detail = storable_text(f"not published: {error}", 500)
    if attempts >= MAX_ATTEMPTS:
        return await _settle(item, "skipped", detail)
    await items_collection().update_one(
        {"_id": item["_id"]}, {"$set": {"attempts": attempts, "detail": detail}}
    )
    return "pending"


async def _settle(
    item: dict[str, Any],
    outcome: str,
    detail: str | None,
    expected: str = "pending",
    **fields: Any,
) -> str:
    now = connection.server_clock().estimate()
    await items_collection().update_one(
        {"_id": item["_id"], "outcome": expected},
        {"$set": {"outcome": outcome, "detail": detail, "updatedAt": now, **fields}},
    )
    return outcome


def _before(limit: int | None) -> dict[str, int]:
    return {"$gte": 0, "$lt": MAX_POSITION if limit is None else limit}
