"""The API's JSON shapes: snake_case keys (the stored documents stay camelCase), lists as
``{"items": [...], "next_cursor": ...}``, payloads and results with the configured fields
redacted. Each model has a ``of`` that builds it from what the operations layer returns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from tracker.lifecycle import ErrorCategory
from tracker.models import TaskTracker
from tracker.operations.audit import AuditEntry
from tracker.operations.groups import FailureGroup
from tracker.operations.replays import ReplayItem, ReplayJob
from tracker.operations.search import QueueSummary
from tracker.web.api.timestamps import Timestamp

T = TypeVar("T")
Redact = Callable[[Any], Any]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListOf(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")
    total: int | None = Field(default=None, description="How many match in all, if counted")

    @model_serializer(mode="wrap")
    def _counted_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A list that does not count says nothing of a total rather than null.
        data = handler(self)
        if isinstance(data, dict) and data.get("total") is None:
            data.pop("total", None)
        return data


class Queue(Schema):
    name: str
    counts: dict[str, int] = Field(description="executions per status")
    oldest_queued_at: Timestamp | None
    failing_groups: int

    @classmethod
    def of(cls, summary: QueueSummary) -> Queue:
        return cls(**{**vars(summary), "counts": dict(summary.counts)})


class HistoryEntry(Schema):
    status: str
    at: Timestamp
    message: str
    worker: str | None


class Execution(Schema):
    """One execution attempt; the timeline and the search list show these."""

    task_id: str
    execution_id: str
    queue: str
    status: str
    retry_count: int
    max_retries: int | None
    enqueued_at: Timestamp
    processing_started_at: Timestamp | None
    completed_at: Timestamp | None
    failed_at: Timestamp | None
    archived_at: Timestamp | None
    updated_at: Timestamp
    error_category: str | None
    error_type: str | None
    error_message: str | None
    group_id: str | None
    source_execution_id: str | None = Field(description="the execution this one retried")
    next_execution_id: str | None
    metadata: dict[str, Any]
    timeout_seconds: float | None = None
    timeout_at: Timestamp | None = Field(default=None, description="when this attempt times out")
    claimed_by: str | None = Field(default=None, description="the worker that ran it")


class ExecutionDetail(Execution):
    error_stack: str | None
    payload: Any
    result: Any
    archived_reason: str | None
    archived_by: str | None
    history: list[HistoryEntry]
    raw_body: str | None = Field(
        default=None, description="a rejected delivery's body as received (hidden under redaction)"
    )


def _fields(doc: TaskTracker, redact: Redact) -> dict[str, Any]:
    return {
        "task_id": doc.task_id,
        "execution_id": doc.execution_id,
        "queue": doc.queue_name,
        "status": doc.status.value,
        "retry_count": doc.retry_count,
        "max_retries": doc.max_retries,
        "enqueued_at": doc.enqueued_at,
        "processing_started_at": doc.processing_started_at,
        "completed_at": doc.completed_at,
        "failed_at": doc.failed_at,
        "archived_at": doc.archived_at,
        "updated_at": doc.updated_at,
        "error_category": doc.error_category.value if doc.error_category else None,
        "error_type": doc.error_type,
        "error_message": doc.error_message,
        "group_id": doc.group_id,
        "source_execution_id": doc.source_execution_id,
        "next_execution_id": doc.next_execution_id,
        "metadata": redact(doc.metadata),
        "timeout_seconds": doc.timeout_seconds,
        "timeout_at": doc.timeout_at,
        "claimed_by": doc.claimed_by,
    }


def execution(doc: TaskTracker, redact: Redact) -> Execution:
    return Execution(**_fields(doc, redact))


def execution_detail(
    doc: TaskTracker, redact: Redact, *, redacting: bool = False
) -> ExecutionDetail:
    """``doc`` in full; ``redacting``: fields are redacted, so the raw body is hidden (a body
    that is not JSON cannot be redacted field by field)."""
    raw = None if doc.raw_body is None else doc.raw_body.decode("utf-8", "backslashreplace")
    return ExecutionDetail(
        **_fields(doc, redact),
        error_stack=doc.error_stack,
        payload=redact(doc.payload),
        result=redact(doc.result),
        archived_reason=doc.archived_reason,
        archived_by=doc.archived_by,
        raw_body="[redacted]" if redacting and raw is not None else raw,
        history=[
            HistoryEntry(status=h.status.value, at=h.at, message=h.message, worker=h.worker)
            for h in doc.history
        ],
    )


class Timeline(Schema):
    task_id: str
    executions: list[ExecutionDetail] = Field(description="every attempt, oldest first")


class EnqueueRequest(Schema):
    queue: str = Field(min_length=1, max_length=200)
    payload: Any
    task_id: str | None = Field(default=None, min_length=1, max_length=512)
    metadata: dict[str, Any] | None = None


class Enqueued(Schema):
    task_id: str
    execution_id: str
    deduplicated: bool
    status: str


class RetryRequest(Schema):
    payload: Any = Field(description="the edited payload, published as the new attempt's")
    reason: str = Field(min_length=1, max_length=500)


class Group(Schema):
    id: str
    queue: str
    category: str
    error_type: str
    signature: str
    state: Literal["open", "resolved", "regressed"]
    muted: bool
    count: int
    first_seen: Timestamp
    last_seen: Timestamp
    sample_message: str
    sample_execution_id: str | None
    resolved_at: Timestamp | None = None
    resolved_by: str | None = None
    dead_letters_left: int | None = Field(
        default=None, description="its dead letters not archived yet (one group's answer only)"
    )

    @classmethod
    def of(cls, group: FailureGroup, dead_letters_left: int | None = None) -> Group:
        names = [name for name in cls.model_fields if name != "dead_letters_left"]
        return cls(**{n: getattr(group, n) for n in names}, dead_letters_left=dead_letters_left)


class Reason(Schema):
    reason: str | None = Field(default=None, max_length=500)


class ReplayChoice(Schema):
    """What a replay runs: a group; a queue with category, status and time range (kept to the
    microsecond, as asked: plain ``datetime``, not ``Timestamp``); tasks or executions."""

    group_id: str | None = Field(default=None, min_length=1, max_length=512)
    queue: str | None = Field(default=None, min_length=1, max_length=200)
    status: Literal["dlq", "failed", "archived", "completed"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    task_ids: list[str] = Field(default_factory=list, max_length=10_000)
    execution_ids: list[str] = Field(default_factory=list, max_length=10_000)
    category: ErrorCategory | None = None


class ReplayRequest(ReplayChoice):
    """A selection, a reason, and how to run it."""

    reason: str = Field(min_length=1, max_length=500)
    dry_run: bool = False
    rate_per_second: float | None = Field(default=None, gt=0, le=10_000)
    canary_size: int | None = Field(default=None, ge=1, le=10_000)
    canary_max_failure_share: float | None = Field(default=None, ge=0, le=1)
    follow_seconds: float | None = Field(
        default=None, ge=0, le=7 * 86400, description="how long to follow the new executions"
    )
    archived_retention_seconds: float | None = Field(
        default=None, ge=0, le=100 * 365 * 86400, description="how long the archived are kept"
    )


class Selection(Schema):
    group_id: str | None
    queue: str | None
    status: str | None
    since: Timestamp | None
    until: Timestamp | None
    task_ids: list[str]
    execution_ids: list[str] = Field(default_factory=list)
    category: str | None = None


ReplayStateName = Literal["pending", "running", "paused", "completed", "cancelled", "stopped"]


class Replay(Schema):
    id: str
    state: ReplayStateName
    selection: Selection
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
    created_at: Timestamp
    updated_at: Timestamp
    stopped_reason: str | None
    pending: int = 0
    follow_seconds: float = 0.0
    finished_at: Timestamp | None = None

    @classmethod
    def of(cls, job: ReplayJob) -> Replay:
        chosen = job.selection
        selection = Selection(
            group_id=chosen.group_id,
            queue=chosen.queue,
            status=chosen.status.value if chosen.status is not None else None,
            since=chosen.since,
            until=chosen.until,
            task_ids=list(chosen.task_ids),
            execution_ids=list(chosen.execution_ids),
            category=chosen.category,
        )
        fields = {name: getattr(job, name) for name in cls.model_fields if name != "selection"}
        return cls(selection=selection, **fields)


class ReplayItemOut(Schema):
    task_id: str
    execution_id: str
    outcome: Literal["pending", "republished", "succeeded", "failed", "skipped"]
    new_execution_id: str | None
    detail: str | None
    position: int = 0
    supersedes: list[str] = Field(default_factory=list, description="archived with it")

    @classmethod
    def of(cls, item: ReplayItem) -> ReplayItemOut:
        return cls(**{name: getattr(item, name) for name in cls.model_fields})


class Audit(Schema):
    id: str
    at: Timestamp
    actor: str
    role: str
    via: str
    action: str
    target: str
    selection: dict[str, Any] | None
    reason: str | None
    result: dict[str, Any] | None

    @classmethod
    def of(cls, entry: AuditEntry, redact: Redact) -> Audit:
        fields = {name: getattr(entry, name) for name in cls.model_fields}
        fields["selection"] = redact(entry.selection)
        fields["result"] = redact(entry.result)
        return cls(**fields)
