"""Replay jobs as stored (collections ``tracker_replays`` and ``tracker_replay_items``):
their types, the selection frozen into items when a job is created, and the counts.

An item is one task: the newest of its selected dead letters is the one run again, the
others (``supersedes``) are archived with it. Items run in ``position`` order, oldest
first. An item's ``outcome`` is ``pending``, then ``republished`` (its new execution is
published), then ``succeeded`` or ``failed`` as that execution and its retries end, or
``skipped`` (with the reason in ``detail``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from tracker.clock import as_utc
from tracker.constants import OPERATIONS_RETENTION_SECONDS
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.store import connection
from tracker.store.operator_records import REPLAY_ITEMS, REPLAYS
from tracker.validation import check_id, check_optional_id

ReplayState = Literal["pending", "running", "paused", "completed", "cancelled", "stopped"]
STATES: Final = ("pending", "running", "paused", "completed", "cancelled", "stopped")
FINISHED: Final = frozenset({"completed", "cancelled"})
OUTCOMES: Final = ("pending", "republished", "succeeded", "failed", "skipped")
# What a replay may select: dead letters, or archived ones run once more.
SELECTABLE: Final = (TaskStatus.DLQ, TaskStatus.ARCHIVED)
MAX_TASK_IDS: Final = 1000
# A job covers at most this many dead letters; a larger selection must be narrowed.
MAX_SELECTED: Final = 10_000


@dataclass(frozen=True)
class ReplaySelection:
    """What a replay runs again: a failure group, a queue, explicit tasks or executions,
    narrowed by category and enqueue time; dead letters unless ``status`` is ``archived``."""

    group_id: str | None = None
    queue: str | None = None
    status: TaskStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    task_ids: tuple[str, ...] = ()
    execution_ids: tuple[str, ...] = ()
    category: str | None = None

    def __post_init__(self) -> None:
        check_optional_id(self.group_id, "group_id")
        check_optional_id(self.queue, "queue")
        if self.status is not None:
            status = TaskStatus(check_id(self.status, "status"))
            if status not in SELECTABLE:
                raise ValueError("a replay selects dead letters (dlq) or archived executions")
            object.__setattr__(self, "status", status)
        if self.category is not None:
            ErrorCategory(check_id(self.category, "category"))
        for bound in (self.since, self.until):
            if bound is not None and not isinstance(bound, datetime):
                raise TypeError(f"since and until must be datetimes, not {type(bound).__name__}")
        for name in ("task_ids", "execution_ids"):
            values = getattr(self, name)
            if isinstance(values, str | bytes):
                raise TypeError(f"{name} must be a sequence of ids, not a string")
            values = tuple(dict.fromkeys(check_id(v, name) for v in values))
            if len(values) > MAX_TASK_IDS:
                raise ValueError(f"at most {MAX_TASK_IDS} {name} in one replay")
            object.__setattr__(self, name, values)
        if not (self.group_id or self.queue or self.task_ids or self.execution_ids):
            raise ValueError("say what to replay: a group, a queue, task ids or execution ids")

    def as_document(self) -> dict[str, Any]:
        doc = {
            "groupId": self.group_id,
            "queue": self.queue,
            "status": (self.status or TaskStatus.DLQ).value,
            "since": self.since,
            "until": self.until,
            "taskIds": list(self.task_ids),
            "executionIds": list(self.execution_ids),
            "category": self.category,
        }
        return {name: value for name, value in doc.items() if value not in (None, [])}


@dataclass(frozen=True)
class ReplayJob:
    id: str
    state: ReplayState
    selection: ReplaySelection
    reason: str
    dry_run: bool
    rate_per_second: float | None
    canary_size: int | None
    canary_max_failure_share: float | None
    matched: int
    republished: int
    succeeded: int
    failed: int
    skipped: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    stopped_reason: str | None
    pending: int = 0
    follow_seconds: float = 0.0
    canary_passed: bool = False
    finished_at: datetime | None = None
    archived_retention: float | None = None


@dataclass(frozen=True)
class ReplayItem:
    task_id: str
    execution_id: str
    outcome: str
    new_execution_id: str | None
    detail: str | None
    position: int = 0
    supersedes: tuple[str, ...] = field(default_factory=tuple)


def query_of(selection: ReplaySelection) -> tuple[dict[str, Any], str | None]:
    """The executions ``selection`` names, and the field that orders them on an index (None:
    found by execution id, at most ``MAX_TASK_IDS``)."""
    status = (selection.status or TaskStatus.DLQ).value
    query: dict[str, Any] = {"status": status}
    if selection.category is not None:
        query["errorCategory"] = selection.category
    if selection.queue is not None:
        query["queueName"] = selection.queue
    if selection.group_id is not None:
        query["groupId"] = selection.group_id
    if selection.task_ids:
        query["taskId"] = {"$in": list(selection.task_ids)}
    if selection.execution_ids:
        query["executionId"] = {"$in": list(selection.execution_ids)}
    times = {
        op: bound for op, bound in (("$gte", selection.since), ("$lte", selection.until)) if bound
    }
    if times:
        query["enqueuedAt"] = times
    if selection.execution_ids:
        return query, None
    order = "failedAt" if selection.group_id and not selection.queue else "enqueuedAt"
    return query, order


async def freeze(selection: ReplaySelection) -> list[dict[str, Any]]:
    """The items of ``selection`` now, one per task, oldest first (not yet stored).
    ``ValueError`` when it selects more than ``MAX_SELECTED`` executions."""
    query, order = query_of(selection)
    found = (
        await connection.collection()
        .find(
            query,
            projection={"taskId": 1, "executionId": 1, "queueName": 1, "enqueuedAt": 1},
            sort=None if order is None else [(order, -1)],
        )
        .limit(MAX_SELECTED + 1)
        .to_list(MAX_SELECTED + 1)
    )
    if len(found) > MAX_SELECTED:
        raise ValueError(f"the selection matches more than {MAX_SELECTED} executions: narrow it")
    by_task: dict[str, list[dict[str, Any]]] = {}
    for doc in found:
        by_task.setdefault(str(doc["taskId"]), []).append(doc)
    items = []
    for task_id, docs in by_task.items():
        docs.sort(key=lambda d: as_utc(d["enqueuedAt"]), reverse=True)
        items.append(
            {
                "taskId": task_id,
                "executionId": docs[0]["executionId"],
                "queue": docs[0]["queueName"],
                "supersedes": [d["executionId"] for d in docs[1:]],
                "enqueuedAt": as_utc(docs[0]["enqueuedAt"]),
            }
        )
    items.sort(key=lambda item: (item["enqueuedAt"], item["taskId"]))
    return items


async def recount(job_id: str) -> dict[str, int]:
    """Count the job's items per outcome and store the counts on the job."""
    counts = {
        outcome: await items_collection().count_documents({"replayId": job_id, "outcome": outcome})
        for outcome in OUTCOMES
    }
    now = connection.server_clock().estimate()
    await jobs_collection().update_one({"_id": job_id}, {"$set": {**counts, "updatedAt": now}})
    return counts


async def expire_items(job_id: str, now: datetime) -> datetime:
    """Give the job's items the expiry of a job finished at ``now``; that expiry."""
    expires = now + timedelta(seconds=OPERATIONS_RETENTION_SECONDS)
    await items_collection().update_many({"replayId": job_id}, {"$set": {"expiresAt": expires}})
    return expires


def job_from(doc: Mapping[str, Any]) -> ReplayJob:
    selection = doc.get("selection") or {}
    finished = doc.get("finishedAt")
    return ReplayJob(
        id=str(doc["_id"]),
        state=doc["state"],
        selection=ReplaySelection(
            group_id=selection.get("groupId"),
            queue=selection.get("queue"),
            status=TaskStatus(selection.get("status", TaskStatus.DLQ.value)),
            since=_time(selection.get("since")),
            until=_time(selection.get("until")),
            task_ids=tuple(selection.get("taskIds", ())),
            execution_ids=tuple(selection.get("executionIds", ())),
            category=selection.get("category"),
        ),
        reason=str(doc.get("reason", "")),
        dry_run=bool(doc.get("dryRun", False)),
        rate_per_second=doc.get("ratePerSecond"),
        canary_size=doc.get("canarySize"),
        canary_max_failure_share=doc.get("canaryMaxFailureShare"),
        matched=int(doc.get("matched", 0)),
        republished=int(doc.get("republished", 0)),
        succeeded=int(doc.get("succeeded", 0)),
        failed=int(doc.get("failed", 0)),
        skipped=int(doc.get("skipped", 0)),
        created_by=str(doc.get("createdBy", "")),
        created_at=as_utc(doc["createdAt"]),
        updated_at=as_utc(doc["updatedAt"]),
        stopped_reason=doc.get("stoppedReason"),
        pending=int(doc.get("pending", 0)),
        follow_seconds=float(doc.get("followSeconds", 0.0)),
        canary_passed=bool(doc.get("canaryPassed", False)),
        finished_at=_time(finished),
        archived_retention=doc.get("archivedRetention"),
    )


def item_from(doc: Mapping[str, Any]) -> ReplayItem:
    supersedes: Sequence[str] = doc.get("supersedes") or ()
    return ReplayItem(
        task_id=str(doc["taskId"]),
        execution_id=str(doc["executionId"]),
        outcome=str(doc["outcome"]),
        new_execution_id=doc.get("newExecutionId"),
        detail=doc.get("detail"),
        position=int(doc["position"]),
        supersedes=tuple(supersedes),
    )


def _time(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def jobs_collection() -> Any:
    return connection.database()[REPLAYS]


def items_collection() -> Any:
    return connection.database()[REPLAY_ITEMS]
