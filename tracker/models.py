"""The ``TaskTracker`` document (collection ``task_trackers``), its indexes and the Mongoose
schema's queries. Stored field names are the Mongoose schema's camelCase; Python attributes
are snake_case."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from beanie import Document, Insert, Replace, Save, SaveChanges, SortDirection, before_event
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tracker.clock import as_utc, new_execution_id, seconds, utcnow
from tracker.constants import COLLECTION, DEFAULT_MAX_RETRIES, MESSAGE_VERSION
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.store import clock
from tracker.store.indexes import DEFAULT_INDEXES
from tracker.validation import check_id


class HistoryEntry(BaseModel):
    """One status change, as the ATP process tracker's status Log keeps them."""

    model_config = ConfigDict(populate_by_name=True)

    status: TaskStatus
    at: datetime
    message: str = ""
    worker: str | None = None

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


# The indexes of the default (unsharded) set: tracker.store.indexes holds both sets.
INDEXES = DEFAULT_INDEXES


class TaskTracker(Document):
    """One execution attempt of a task. ``task_id`` is the business identity, stable across
    retries; ``execution_id`` is new for every attempt."""

    model_config = ConfigDict(populate_by_name=True)

    task_id: str = Field(alias="taskId", min_length=1)
    execution_id: str = Field(default_factory=new_execution_id, alias="executionId")
    queue_name: str = Field(alias="queueName", min_length=1)
    message_version: str = Field(default=MESSAGE_VERSION, alias="messageVersion")
    status: TaskStatus = TaskStatus.QUEUED

    enqueued_at: datetime = Field(default_factory=utcnow, alias="enqueuedAt")
    processing_started_at: datetime | None = Field(default=None, alias="processingStartedAt")
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    failed_at: datetime | None = Field(default=None, alias="failedAt")
    archived_at: datetime | None = Field(default=None, alias="archivedAt")

    retry_count: int = Field(default=0, alias="retryCount", ge=0)
    max_retries: int | None = Field(default=None, alias="maxRetries", ge=0)
    last_retry_at: datetime | None = Field(default=None, alias="lastRetryAt")

    error_message: str | None = Field(default=None, alias="errorMessage")
    error_category: ErrorCategory | None = Field(default=None, alias="errorCategory")
    error_stack: str | None = Field(default=None, alias="errorStack")
    error_type: str | None = Field(default=None, alias="errorType")

    metadata: dict[str, Any] = Field(default_factory=dict)

    archived_reason: str | None = Field(default=None, alias="archivedReason")
    archived_by: str | None = Field(default=None, alias="archivedBy")

    created_at: datetime = Field(default_factory=utcnow, alias="createdAt")
    updated_at: datetime = Field(default_factory=utcnow, alias="updatedAt")

    # Beyond the Mongoose schema (see docs/design.md for why each exists).
    history: list[HistoryEntry] = Field(default_factory=list)
    payload: Any = None
    result: Any = None
    active_key: str | None = Field(default=None, alias="activeKey")
    claim_token: str | None = Field(default=None, alias="claimToken")
    claimed_by: str | None = Field(default=None, alias="claimedBy")
    lease_expires_at: datetime | None = Field(default=None, alias="leaseExpiresAt")
    timeout_seconds: float | None = Field(default=None, alias="timeoutSeconds")
    next_execution_id: str | None = Field(default=None, alias="nextExecutionId")
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    released_at: datetime | None = Field(default=None, alias="releasedAt")
    republished_at: datetime | None = Field(default=None, alias="republishedAt")
    publish_unconfirmed_at: datetime | None = Field(default=None, alias="publishUnconfirmedAt")
    timeout_at: datetime | None = Field(default=None, alias="timeoutAt")
    source_execution_id: str | None = Field(default=None, alias="sourceExecutionId")
    group_id: str | None = Field(default=None, alias="groupId")
    # A rejected delivery's record: what it claimed, and its raw bytes (bounded).
    claimed_task_id: str | None = Field(default=None, alias="claimedTaskId")
    claimed_execution_id: str | None = Field(default=None, alias="claimedExecutionId")
    raw_body: bytes | None = Field(default=None, alias="rawBody")

    class Settings:
        name = COLLECTION
        # A None field is left out of the stored document: activeKey must be absent, not
        # null, when the execution is not active, or the partial unique index would see it.
        keep_nulls = False

    @field_validator(
        "enqueued_at",
        "processing_started_at",
        "completed_at",
        "failed_at",
        "archived_at",
        "last_retry_at",
        "created_at",
        "updated_at",
        "lease_expires_at",
        "expires_at",
        "released_at",
        "republished_at",
        "publish_unconfirmed_at",
        "timeout_at",
    )
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    @before_event(Insert, Replace, Save, SaveChanges)
    def _touch(self) -> None:
        """The Mongoose schema's pre-save hook; the tracker's atomic updates set updatedAt too."""
        self.updated_at = utcnow()

    def effective_max_retries(self) -> int:
        return DEFAULT_MAX_RETRIES if self.max_retries is None else self.max_retries

    def can_retry(self) -> bool:
        """The Mongoose schema's ``canRetry``: another attempt is allowed after this one."""
        return self.retry_count < self.effective_max_retries()

    def is_stuck(self, timeout: float | timedelta = 30 * 60) -> bool:
        """The schema's ``isStuck``: processing for longer than ``timeout`` (default 30 min)."""
        if self.status is not TaskStatus.PROCESSING or self.processing_started_at is None:
            return False
        return (utcnow() - self.processing_started_at).total_seconds() > seconds(timeout)

    def to_document(self) -> dict[str, Any]:
        """The stored form: camelCase names, None fields left out."""
        data: dict[str, Any] = self.model_dump(
            by_alias=True, exclude_none=True, exclude={"id", "revision_id"}
        )
        return data

    @classmethod
    async def find_retry_chain(cls, task_id: str) -> list[TaskTracker]:
        """Every execution of ``task_id``, oldest first (the schema's ``findRetryChain``)."""
        check_id(task_id, "task_id")
        chain = (
            await cls.find({"taskId": task_id})
            .sort([("createdAt", SortDirection.ASCENDING)])
            .to_list()
        )
        return in_attempt_order(chain)

    @classmethod
    async def find_stuck_tasks(
        cls, queue_name: str, timeout: float | timedelta = 30 * 60, *, limit: int = 1000
    ) -> list[TaskTracker]:
        """Executions of ``queue_name`` processing for longer than ``timeout`` (on the
        server's clock), longest first, at most ``limit``."""
        check_id(queue_name, "queue_name")
        threshold = clock.current().estimate() - timedelta(seconds=seconds(timeout))
        return (
            await cls.find(
                {
                    "queueName": queue_name,
                    "status": TaskStatus.PROCESSING.value,
                    "processingStartedAt": {"$lt": threshold},
                }
            )
            .sort([("processingStartedAt", SortDirection.ASCENDING)])
            .limit(limit)
            .to_list()
        )

    @classmethod
    async def get_queue_stats(cls, queue_name: str) -> dict[str, int]:
        """Executions of ``queue_name`` per status, every status present (the Mongoose
        schema's ``getQueueStats``), each counted on the ``{queueName, status}`` index."""
        check_id(queue_name, "queue_name")
        collection = cls.get_pymongo_collection()
        return {
            status.value: await collection.count_documents(
                {"queueName": queue_name, "status": status.value}
            )
            for status in TaskStatus
        }

    @classmethod
    async def find_execution(
        cls, execution_id: str, task_id: str | None = None
    ) -> TaskTracker | None:
        """The execution ``execution_id`` (of ``task_id``: the shard key, when known)."""
        check_id(execution_id, "execution_id")
        query = {"executionId": execution_id}
        if task_id is not None:
            query["taskId"] = check_id(task_id, "task_id")
        return await cls.find_one(query)


def in_attempt_order(executions: list[TaskTracker]) -> list[TaskTracker]:
    """``executions`` of one task, each retry right after the attempt it retries, chains by
    their first attempt's ``createdAt``. The links, not the times, order a chain: processes'
    clocks differ by milliseconds, and a retry is created milliseconds after its attempt."""
    by_id = {execution.execution_id: execution for execution in executions}
    retries = {e.next_execution_id for e in executions if e.next_execution_id is not None}
    firsts = [e for e in executions if e.execution_id not in retries]
    ordered: list[TaskTracker] = []
    seen: set[str] = set()
    for first in sorted(firsts, key=lambda e: (e.created_at, e.retry_count)):
        current: TaskTracker | None = first
        while current is not None and current.execution_id not in seen:
            seen.add(current.execution_id)
            ordered.append(current)
            following = current.next_execution_id
            current = None if following is None else by_id.get(following)
    # A chain whose links loop (written by hand): by time, after the others.
    rest = [e for e in executions if e.execution_id not in seen]
    return ordered + sorted(rest, key=lambda e: (e.created_at, e.retry_count))
