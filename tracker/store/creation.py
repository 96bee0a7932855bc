"""Creating executions, with enqueue-time deduplication: one by one, or those of concurrent
enqueues together (one read and one insert for the lot).

The database decides: a new execution of an active status carries ``activeKey`` under a
unique partial index, so concurrent creations of one task yield exactly one active
execution; the others find it and are ``deduplicated``. An active execution written without
the key (a Node service without the Mongoose plugin) makes its task active too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from tracker.clock import new_execution_id
from tracker.constants import MESSAGE_VERSION
from tracker.errors import ConfigurationError
from tracker.lifecycle import INITIAL_STATUSES, TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
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
    in one read and one unordered insert for them all; one result each, in order: the
    execution, or the store error that refused that one alone."""
    unpatched = await _active_without_key([new.task_id for new in batch if new.status.is_active])
    now = connection.server_clock().estimate()
    results: list[Created | Exception | None] = [None] * len(batch)
    pending: list[tuple[int, dict[str, Any]]] = []
    for index, new in enumerate(batch):
        found = unpatched.get(new.task_id) if new.status.is_active else None
        if found is not None:
            results[index] = Created(found, deduplicated=True)
        else:
            pending.append((index, new.document(now)))
    for _ in range(MAX_ATTEMPTS):
        if not pending:
            break
        refused = await _insert(pending, results)
        pending = []
        for index, document in refused:
            existing = await _find_conflict(document["taskId"], document["executionId"])
            if existing is not None:
                results[index] = Created(existing, deduplicated=True)
            else:
                # The conflicting execution finished between the insert and the lookup.
                pending.append((index, document))
    for index, document in pending:
        results[index] = ConfigurationError(
            f"could not create an execution of {document['taskId']!r}: it keeps conflicting"
        )
    return [result for result in results if result is not None]


async def _insert(
    pending: list[tuple[int, dict[str, Any]]], results: list[Created | Exception | None]
) -> list[tuple[int, dict[str, Any]]]:
    """Insert the ``pending`` documents, recording each created one (or the error that
    refused it alone) in ``results``; those refused as duplicates (the task is active, or
    the execution id is taken), to look at again."""
    if len(pending) > 1:
        try:
            return await _insert_many(pending, results)
        except Exception as error:
            if is_transient(error) or not is_store_error(error):
                raise
            # One document could not even be sent (a value BSON cannot hold): each alone.
    refused = []
    for index, document in pending:
        try:
            await connection.collection().insert_one(document)
        except DuplicateKeyError:
            document.pop("_id", None)
            refused.append((index, document))
            continue
        except Exception as error:
            if len(pending) == 1 or is_transient(error) or not is_store_error(error):
                raise
            results[index] = error
            continue
        results[index] = Created(document, deduplicated=False)
    return refused


async def _insert_many(
    pending: list[tuple[int, dict[str, Any]]], results: list[Created | Exception | None]
) -> list[tuple[int, dict[str, Any]]]:
    failed: dict[int, dict[str, Any]] = {}
    try:
        await connection.collection().insert_many(
            [document for _, document in pending], ordered=False
        )
    except BulkWriteError as failure:
        if failure.details.get("writeConcernErrors"):
            raise
        for error in failure.details.get("writeErrors", []):
            failed[int(error["index"])] = error
    refused = []
    for position, (index, document) in enumerate(pending):
        error = failed.get(position)
        if error is None:
            results[index] = Created(document, deduplicated=False)
        elif error.get("code") == DUPLICATE_KEY:
            document.pop("_id", None)
            refused.append((index, document))
        else:
            results[index] = WriteError(error.get("errmsg", ""), error.get("code"), error)
    return refused


async def _find_conflict(task_id: str, execution_id: str) -> TaskTracker | None:
    """What an insert ran into: the same execution id (of this task or, under the default
    index set, another's), or the task's active execution."""
    same_execution = await TaskTracker.find_one({"executionId": execution_id})
    if same_execution is not None:
        return same_execution
    return await TaskTracker.find_one({"taskId": task_id, "activeKey": task_id})


async def _active_without_key(task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The tasks of ``task_ids`` that have an active execution without ``activeKey`` (so the
    unique index cannot see it), with that execution's document."""
    if not task_ids:
        return {}
    cursor = connection.collection().find(
        {
            "taskId": {"$in": sorted(set(task_ids))},
            "status": {"$in": ACTIVE},
            "activeKey": {"$exists": False},
        }
    )
    return {doc["taskId"]: doc async for doc in cursor}
