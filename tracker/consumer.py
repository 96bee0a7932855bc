"""``@tracked``: a handler bound to a queue with its timeout, retry and classification."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from tracker.clock import seconds
from tracker.constants import (
    DEFAULT_ARCHIVED_RETENTION_SECONDS,
    DEFAULT_AUTO_ARCHIVE_SECONDS,
    DEFAULT_CONSUMER_MAX_RETRIES,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_PAYLOAD_BYTES,
)
from tracker.errors import ConfigurationError
from tracker.retry import RetryPolicy
from tracker.validation import check_count, check_queue

if TYPE_CHECKING:
    from tracker.classify import Classifier
    from tracker.models import TaskTracker


@dataclass(frozen=True, eq=False)
class TaskContext:
    """What a handler receives: the payload and identity of the execution it is running.

    ``record``: the execution's stored document as claimed (camelCase names; not the payload,
    the result nor the full history), which ``execution`` validates into a model on first use.
    ``log`` is bound to queue, task_id, execution_id and retry_count on first use."""

    payload: Any
    task_id: str
    execution_id: str
    retry_count: int
    max_retries: int
    queue: str
    metadata: dict[str, Any]
    redelivered: bool = False
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        return structlog.get_logger("tracker.task").bind(  # type: ignore[no-any-return]
            queue=self.queue,
            task_id=self.task_id,
            execution_id=self.execution_id,
            retry_count=self.retry_count,
        )

    @functools.cached_property
    def execution(self) -> TaskTracker:
        from tracker.models import TaskTracker

        execution: TaskTracker = TaskTracker.model_validate(self.record)
        return execution


Handler = Callable[[TaskContext], Awaitable[Any]]
# Frees what an execution's result holds outside MongoDB (a file, say): see ``releasing``.
Release = Callable[["TaskTracker"], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class QueueRules:
    """How the tracker treats the executions of one queue, whoever records their outcome (the
    consumer, the deadline listener, the sweeper or an operator): retries, timeout, size
    bound, retention. ``@tracked`` builds it; operators' tools build it from the record."""

    queue: str
    max_retries: int = DEFAULT_CONSUMER_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retry_on: tuple[type[BaseException], ...] = ()
    classify: Classifier | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    timeout_message: str | None = None
    retention: float | None = DEFAULT_RETENTION_SECONDS
    archived_retention: float | None = DEFAULT_ARCHIVED_RETENTION_SECONDS
    dlq_auto_archive_after: float | None = DEFAULT_AUTO_ARCHIVE_SECONDS
    # Frees a result's outside resources before its record expires (``releasing``).
    release: Release | None = None

    def timeout_text(self) -> str:
        """The error message of an execution that outlived ``timeout``."""
        return self.timeout_message or f"timed out after {self.timeout:g} seconds"


@dataclass(frozen=True, kw_only=True)
class TrackedConsumer(QueueRules):
    """A handler and its queue's rules; calling it calls the handler. ``label`` names it in
    metrics and logs (default: the handler's qualified name)."""

    handler: Handler
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or getattr(self.handler, "__qualname__", repr(self.handler))

    async def __call__(self, task: TaskContext) -> Any:
        return await self.handler(task)

    def releasing(self, release: Release) -> TrackedConsumer:
        """This consumer, with ``release(execution)`` freeing what an execution's result
        holds outside MongoDB (the file a report was written to): the sweeper calls it once
        per execution of the queue shortly before its record expires
        (``Sweeper.release_ahead``), so nothing the record points to outlives it. It must be
        idempotent: one that raises is called again at the next sweep."""
        return dataclasses.replace(self, release=release)


def task_context(
    execution: TaskTracker | Mapping[str, Any],
    rules: QueueRules,
    payload: Any,
    redelivered: bool = False,
) -> TaskContext:
    """The context a handler (or an outcome recorded for it) sees of ``execution``: a model,
    or its stored document as a claim read it."""
    known = None if isinstance(execution, Mapping) else execution
    record: Mapping[str, Any] = (
        execution if isinstance(execution, Mapping) else execution.model_dump(by_alias=True)
    )
    stored_max = record.get("maxRetries")
    task = TaskContext(
        payload=payload,
        task_id=str(record["taskId"]),
        execution_id=str(record["executionId"]),
        retry_count=int(record.get("retryCount") or 0),
        max_retries=rules.max_retries if stored_max is None else int(stored_max),
        queue=rules.queue,
        metadata=dict(record.get("metadata") or {}),
        redelivered=redelivered,
        record=record,
    )
    if known is not None:
        task.__dict__["execution"] = known  # validated already
    return task


def tracked(
    queue: str,
    *,
    max_retries: int = DEFAULT_CONSUMER_MAX_RETRIES,
    timeout: float | timedelta = DEFAULT_TIMEOUT_SECONDS,
    retry_on: tuple[type[BaseException], ...] = (),
    classify: Classifier | None = None,
    retry_policy: RetryPolicy | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    timeout_message: str | None = None,
    retention: float | timedelta | None = DEFAULT_RETENTION_SECONDS,
    archived_retention: float | timedelta | None = DEFAULT_ARCHIVED_RETENTION_SECONDS,
    dlq_auto_archive_after: float | timedelta | None = DEFAULT_AUTO_ARCHIVE_SECONDS,
) -> Callable[[Handler], TrackedConsumer]:
    """Track every message of ``queue`` handled by the decorated ``async def handler(task)``.

    ``max_retries`` retries follow a retryable failure (so at most ``max_retries + 1``
    attempts); ``timeout`` bounds one attempt, after which the execution fails with
    ``timeout_message`` (category ``infrastructure``); exceptions in ``retry_on`` are always
    retried; ``classify`` names the category of other exceptions (return None for defaults).

    Retention, per queue as the ATP process tracker's task types have it: completed
    executions are deleted ``retention`` after completion, failed attempts and archived dead
    letters ``archived_retention`` after; dead letters never expire, they are archived
    ``dlq_auto_archive_after`` their enqueue by the sweeper. None keeps forever. What a
    result holds outside MongoDB is freed with its record: see ``TrackedConsumer.releasing``.
    """
    check_queue(queue)
    check_count(max_retries, "max_retries")
    timeout_seconds = seconds(timeout)
    if timeout_seconds <= 0:
        raise ConfigurationError("timeout must be positive")

    def decorate(handler: Handler) -> TrackedConsumer:
        if not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(
                f"@tracked({queue!r}) needs an `async def` handler; {handler!r} is not one "
                "(synchronous pika callbacks use tracker.rabbit.pika.tracked_callback)"
            )
        return TrackedConsumer(
            handler=handler,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout_seconds,
            retry_on=retry_on,
            classify=classify,
            retry_policy=retry_policy or RetryPolicy(),
            max_payload_bytes=max_payload_bytes,
            timeout_message=timeout_message,
            retention=_optional_seconds(retention),
            archived_retention=_optional_seconds(archived_retention),
            dlq_auto_archive_after=_optional_seconds(dlq_auto_archive_after),
        )

    return decorate


def _optional_seconds(value: float | timedelta | None) -> float | None:
    return None if value is None else seconds(value)
