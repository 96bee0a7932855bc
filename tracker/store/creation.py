"""Creating executions, with enqueue-time deduplication: one by one, or those of concurrent
enqueues together (one write for the lot: an upsert each, which inserts unless the task is
active already).

The database decides: a new execution of an active status carries ``activeKey`` under a
unique partial index, so concurrent creations of one task yield exactly one active
execution; the others find it and are ``deduplicated``. An active execution written without
the key (a Node service without the Mongoose plugin) makes its task active too: the upsert
matches any active execution of the task.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from tracker.clock import new_execution_id
from tracker.constants import MESSAGE_VERSION
from tracker.errors import ConfigurationError
from tracker.lifecycle import INITIAL_STATUSES, TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.bulk import BulkOutcome, update_each
from tracker.store.errors import is_store_error, is_transient
from tracker.store.executions import find_recent_completion
from tracker.store.transitions import history_entry
from tracker.validation import check_count, check_id, check_metadata, check_optional_id

ACTIVE = [TaskStatus.QUEUED.value, TaskStatus.PROCESSING.value]
# Inserts that keep running into a conflicting execution which then finishes: give up.
MAX_ATTEMPTS = 3
DUPLICATE_KEY = 11000


class Created:
    """An execution ``create_execution`` returns; ``deduplicated`` when it already existed
    (an active execution of the task, or a recent completion in the window). ``document`` is
    its stored form; ``execution`` the model, validated on first use."""

    def __init__(self, execution: TaskTracker | Mapping[str, Any], deduplicated: bool) -> None:
        self.deduplicated = deduplicated
        if isinstance(execution, TaskTracker):
            self.__dict__["execution"] = execution
            self.document: Mapping[str, Any] = execution.to_document()
        else:
            self.document = execution

    @functools.cached_property
    def execution(self) -> TaskTracker:
        execution: TaskTracker = TaskTracker.model_validate(self.document)
        return execution

    def __repr__(self) -> str:
        return (
            f"Created(execution_id={self.document.get('executionId')!r}, "
            f"deduplicated={self.deduplicated})"
        )


@dataclass(frozen=True)
class NewExecution:
    """An execution to create. ``enqueued_at`` defaults to now (a retry passes the time its
    delay ends, when it enters the work queue); ``fields`` (stored names) are written too."""

    task_id: str
    queue_name: str
    payload: Any = None
    execution_id: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    metadata: dict[str, Any] | None = None
    max_retries: int | None = None
    retry_count: int = 0
    message_version: str = MESSAGE_VERSION
    history_message: str = "enqueued"
    enqueued_at: datetime | None = None
    fields: Mapping[str, Any] | None = None

    def checked(self) -> NewExecution:
        """This one, its ids and counts checked (``TypeError``/``ValueError`` when not ids
        or counts, ``ConfigurationError`` for a status an execution cannot start in)."""
        check_id(self.task_id, "task_id")
        check_id(self.queue_name, "queue_name")
        check_optional_id(self.execution_id, "execution_id")
        check_count(self.retry_count, "retry_count")
        if self.max_retries is not None:
            check_count(self.max_retries, "max_retries")
        if self.status not in INITIAL_STATUSES:
            raise ConfigurationError(f"an execution cannot be created as {self.status.value!r}")
        if self.metadata is None:
            return self
        return replace(self, metadata=check_metadata(self.metadata))

    def document(self, now: datetime) -> dict[str, Any]:
        """The stored document (the model's ``to_document`` form, with its history)."""
        active = self.status.is_active
        document: dict[str, Any] = {
            "taskId": self.task_id,
            "executionId": self.execution_id or new_execution_id(),
            "queueName": self.queue_name,
            "messageVersion": self.message_version,
            "status": self.status.value,
            "enqueuedAt": self.enqueued_at or now,
            "retryCount": self.retry_count,
            "metadata": self.metadata or {},
            "createdAt": now,
            "updatedAt": now,
            "history": [history_entry(self.status, now, self.history_message)],
        }
        if self.max_retries is not None:
            document["maxRetries"] = self.max_retries
        if self.retry_count > 0:
            document["lastRetryAt"] = now
        if self.payload is not None:
            document["payload"] = self.payload
        if active:
            document["activeKey"] = self.task_id
        document.update(self.fields or {})
        return document


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
    execution completed within that window is returned the same way."""
    new = NewExecution(
        task_id,
        queue_name,
        payload,
        execution_id,
        status,
        metadata,
        max_retries,
        retry_count,
        message_version,
        history_message,
        enqueued_at,
        fields,
    ).checked()
    if dedupe_window is not None:
        recent = await find_recent_completion(task_id, dedupe_window)
        if recent is not None:
            return Created(recent, deduplicated=True)
    [created] = await create_executions([new])
    if isinstance(created, Exception):
        raise created
    return created


async def create_executions(batch: Sequence[NewExecution]) -> list[Created | Exception]:
    """Create each execution of ``batch`` (checked already) as ``create_execution`` does,
    in one round trip for them all when none is a duplicate; one result each, in order: the
    execution, or the store error that refused that one alone."""
    now = connection.server_clock().estimate()
    results: list[Created | Exception | None] = [None] * len(batch)
    pending = [(index, new.document(now)) for index, new in enumerate(batch)]
    for _ in range(MAX_ATTEMPTS):
        if not pending:
            break
        met = await _insert(pending, results)
        pending = []
        for index, document in met:
            # The others of the batch may be stored already: a lookup that fails is this
            # creation's error alone, or their enqueues would fail with it and, retried,
            # find their executions and publish nothing.
            try:
                existing = await _find_conflict(document)
            except Exception as error:
                if not is_store_error(error):
                    raise
                results[index] = error
                continue
            if existing is None:
                # The execution it met finished between the write and the lookup.
                pending.append((index, document))
            elif existing.get("_id") == document["_id"]:
                # Its own document, written by an earlier attempt of this batch (a bulk
                # write split in several messages applies the first ones and then fails).
                results[index] = Created(document, deduplicated=False)
            else:
                results[index] = Created(existing, deduplicated=True)
    for index, document in pending:
        results[index] = ConfigurationError(
            f"could not create an execution of {document['taskId']!r}: it keeps conflicting"
        )
    return [result for result in results if result is not None]


def _duplicates(document: dict[str, Any]) -> dict[str, Any]:
    """What would make ``document`` a duplicate: for an active execution, any active
    execution of its task (with ``activeKey`` or, written by a Node service without the
    plugin, without it); else the same execution. It names the task, the shard key.

    ``document`` is written with an upsert of this filter: inserted unless a duplicate is
    stored, in one round trip. Two creations of one task racing each other both insert, and
    the unique ``activeKey`` index refuses the second."""
    duplicate: dict[str, Any] = {"taskId": document["taskId"]}
    if document["status"] in ACTIVE:
        duplicate["status"] = {"$in": ACTIVE}
    else:
        duplicate["executionId"] = document["executionId"]
    return duplicate


async def _insert(
    pending: list[tuple[int, dict[str, Any]]], results: list[Created | Exception | None]
) -> list[tuple[int, dict[str, Any]]]:
    """Insert the ``pending`` documents, recording each created one (or the error that
    refused it alone) in ``results``; those that met an execution already stored (the task
    is active, or the execution id is taken), to look at again."""
    for _, document in pending:
        document.setdefault("_id", ObjectId())
    try:
        return _sorted_out(pending, await _upsert(pending), results)
    except Exception as error:
        if len(pending) == 1 or is_transient(error) or not is_store_error(error):
            raise
    # One document could not even be sent (a value BSON cannot hold): each alone.
    met = []
    for item in pending:
        try:
            met += _sorted_out([item], await _upsert([item]), results)
        except Exception as error:
            if is_transient(error) or not is_store_error(error):
                raise
            results[item[0]] = error
    return met


async def _upsert(pending: list[tuple[int, dict[str, Any]]]) -> BulkOutcome:
    """One bulk write, whatever the number of documents: a creation is always the same
    command (``bulk_write``), apart from the ``update_one`` an outcome writes."""
    return await update_each(
        [
            UpdateOne(_duplicates(document), {"$setOnInsert": document}, upsert=True)
            for _, document in pending
        ]
    )


def _sorted_out(
    pending: list[tuple[int, dict[str, Any]]],
    outcome: BulkOutcome,
    results: list[Created | Exception | None],
) -> list[tuple[int, dict[str, Any]]]:
    met = []
    for position, (index, document) in enumerate(pending):
        error = outcome.errors.get(position)
        if document["_id"] in outcome.upserted:
            results[index] = Created(document, deduplicated=False)
        elif error is None or error.code == DUPLICATE_KEY:
            met.append((index, document))
        else:
            results[index] = error
    return met


async def _find_conflict(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the creation of ``document`` ran into, as stored (validated only when a caller
    asks for the model: a Node service's record need not fit it to make a duplicate): the
    same execution id (of this task or, under the default index set, another's), or the
    task's active execution, or an execution that left the active states with its
    ``activeKey`` still set (a Node service without the plugin forgets to unset it), which
    the unique index holds against the task."""
    collection = connection.collection()
    same_execution = await collection.find_one({"executionId": document["executionId"]})
    if same_execution is not None:
        return same_execution
    task_id = document["taskId"]
    return await collection.find_one(
        {"taskId": task_id, "$or": [{"status": {"$in": ACTIVE}}, {"activeKey": task_id}]}
    )
