"""Finding executions: by task, failure group, business key (a declared metadata key),
queue, status, category and time; a task's timeline; a summary of every queue.

Every query is served by an index and bounded by its page size. The query's most selective
filter picks the index, whose last field orders the list (newest first) and is the field
``since``/``until`` bound:

============================  ===========================================  =============
filter present (first wins)   index                                        ordered by
============================  ===========================================  =============
``task_id``                   ``taskId, status, enqueuedAt``               ``enqueuedAt``
``group_id``                  ``groupId, status, failedAt``                ``failedAt``
``metadata``                  ``metadata.<key>, enqueuedAt``               ``enqueuedAt``
``queue``                     ``queueName, status, enqueuedAt``            ``enqueuedAt``
``category``                  ``errorCategory, failedAt``                  ``failedAt``
``status``, or nothing        ``status, updatedAt``                        ``updatedAt``
============================  ===========================================  =============

Where the index starts with a field and then ``status``, a query without a status names
every status (``$in``): the server then merges one ordered scan per status. The other
filters are checked on the documents the index yields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from pydantic import ValidationError

from tracker.clock import as_utc
from tracker.errors import NotFoundError
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.operations.pages import DEFAULT_LIMIT, Order, Page, fetch
from tracker.store import connection, operator_records
from tracker.store.operator_records import GROUPS
from tracker.validation import MAX_ID_CHARS, check_id, check_optional_id, id_problem

log = structlog.get_logger("tracker.search")

ALL_STATUSES: Final = [status.value for status in TaskStatus]
# A list leaves out what can be large; ``timeline`` returns whole documents.
LIST_PROJECTION: Final = {"payload": 0, "result": 0, "errorStack": 0, "rawBody": 0, "history": 0}
MAX_TIMELINE: Final = 200
MAX_QUEUES: Final = 200
MAX_METADATA_FILTERS: Final = 4
FAILING_STATES: Final = ["open", "regressed"]


@dataclass(frozen=True)
class TaskQuery:
    """What to find; every field narrows. ``metadata``: (key, value) pairs of declared
    search keys (``TRACKER_SEARCH_KEYS``), values compared as strings."""

    task_id: str | None = None
    queue: str | None = None
    status: TaskStatus | None = None
    category: str | None = None
    group_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        check_optional_id(self.task_id, "task_id")
        check_optional_id(self.queue, "queue")
        check_optional_id(self.group_id, "group_id")
        if self.status is not None:
            object.__setattr__(self, "status", TaskStatus(check_id(self.status, "status")))
        if self.category is not None:
            ErrorCategory(check_id(self.category, "category"))
        for bound in (self.since, self.until):
            if bound is not None and not isinstance(bound, datetime):
                raise TypeError(f"since and until must be datetimes, not {type(bound).__name__}")
        pairs = tuple(self.metadata)
        if len(pairs) > MAX_METADATA_FILTERS:
            raise ValueError(f"at most {MAX_METADATA_FILTERS} metadata filters")
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
                raise TypeError("metadata filters are (key, value) pairs of strings")
            problem = id_problem(pair[1], "a metadata value")
            if problem is not None:
                raise (TypeError if not isinstance(pair[1], str) else ValueError)(problem)
        object.__setattr__(self, "metadata", pairs)


@dataclass(frozen=True)
class QueueSummary:
    """One queue: executions per status, when its oldest queued execution was enqueued
    (None: nothing waits), and how many of its failure groups are open or regressed."""

    name: str
    counts: dict[str, int]
    oldest_queued_at: datetime | None
    failing_groups: int


async def find_executions(
    query: TaskQuery, *, cursor: str | None = None, limit: int = DEFAULT_LIMIT
) -> Page[TaskTracker]:
    """Executions matching ``query``, newest first (see the table above), without their
    payload, result, stack, raw body and history. ``ValueError`` for a metadata key that is
    not a declared search key."""
    if not isinstance(query, TaskQuery):
        raise TypeError(f"query must be a TaskQuery, not {type(query).__name__}")
    filter_, order = await _plan(query)
    page = await fetch(
        connection.collection(),
        filter_,
        order,
        cursor=cursor,
        limit=limit,
        low=query.since,
        high=query.until,
        projection=LIST_PROJECTION,
    )
    return Page([e for e in map(_execution, page.items) if e is not None], page.next_cursor)


async def _plan(query: TaskQuery) -> tuple[dict[str, Any], Order]:
    """The filter (driving index's fields first) and the order of ``query``."""
    status: Any = query.status.value if query.status else {"$in": ALL_STATUSES}
    residual: dict[str, Any] = {}
    if query.queue is not None:
        residual["queueName"] = query.queue
    if query.category is not None:
        residual["errorCategory"] = query.category
    if query.group_id is not None:
        residual["groupId"] = query.group_id
    if query.metadata:
        declared = await search_keys()
        for key, value in query.metadata:
            if key not in declared:
                raise ValueError(
                    f"metadata key {key[:MAX_ID_CHARS]!r} is not searchable: declare it in "
                    "TRACKER_SEARCH_KEYS (then run `tracker migrate`)"
                )
            residual[f"{operator_records.SEARCH_PREFIX}{key}"] = value
    if query.task_id is not None:
        return {"taskId": query.task_id, "status": status, **residual}, Order("enqueuedAt")
    if query.group_id is not None:
        return {"groupId": query.group_id, "status": status, **residual}, Order("failedAt")
    chosen = {"status": query.status.value} if query.status else {}
    if query.metadata:
        return {**residual, **chosen}, Order("enqueuedAt")
    if query.queue is not None:
        return {"queueName": query.queue, "status": status, **residual}, Order("enqueuedAt")
    if query.category is not None:
        return {"errorCategory": query.category, **chosen}, Order("failedAt")
    return {"status": status}, Order("updatedAt")


async def search_keys() -> frozenset[str]:
    """The metadata keys that can be searched: those with their index."""
    info = await connection.collection().index_information()
    return operator_records.search_keys_of(info)


async def timeline(task_id: str) -> list[TaskTracker]:
    """Every execution of ``task_id`` (at most the first 200), oldest first, whole: history,
    payload, error. ``NotFoundError`` when the task has none."""
    check_id(task_id, "task_id")
    found = (
        connection.collection()
        .find({"taskId": task_id}, projection={"rawBody": 0}, sort=[("createdAt", 1)])
        .limit(MAX_TIMELINE)
    )
    chain = [e for e in map(_execution, await found.to_list(MAX_TIMELINE)) if e is not None]
    if not chain:
        raise NotFoundError(f"no execution of task {task_id!r}")
    # createdAt has millisecond resolution; retryCount orders attempts made within one.
    return sorted(chain, key=lambda doc: (doc.created_at, doc.retry_count))


async def queues(names: Sequence[str] | None = None) -> list[QueueSummary]:
    """Every queue with executions (at most 200, by name), or those of ``names`` that have
    any (in the order given): counts per status, the oldest queued execution's enqueue
    time, failing groups."""
    if names is None:
        names = sorted(str(n) for n in await connection.collection().distinct("queueName"))
    else:
        names = list(dict.fromkeys(check_id(name, "queue") for name in names))
    summaries = []
    groups = connection.database()[GROUPS]
    for name in names[:MAX_QUEUES]:
        counts = await TaskTracker.get_queue_stats(name)
        if not any(counts.values()):
            continue
        oldest = (
            await connection.collection()
            .find(
                {"queueName": name, "status": TaskStatus.QUEUED.value},
                projection={"enqueuedAt": 1},
                sort=[("enqueuedAt", 1)],
            )
            .limit(1)
            .to_list(1)
        )
        failing = await groups.count_documents({"queue": name, "state": {"$in": FAILING_STATES}})
        summaries.append(
            QueueSummary(
                name=name,
                counts=counts,
                oldest_queued_at=as_utc(oldest[0]["enqueuedAt"]) if oldest else None,
                failing_groups=failing,
            )
        )
    return summaries


def _execution(doc: dict[str, Any]) -> TaskTracker | None:
    """The document as a ``TaskTracker``; None (logged) for one another writer left in a
    shape the model cannot read, so one such document does not hide the others."""
    try:
        execution: TaskTracker = TaskTracker.model_validate(doc)
    except ValidationError as error:
        log.warning("unreadable execution skipped", id=str(doc.get("_id")), error=str(error))
        return None
    return execution
