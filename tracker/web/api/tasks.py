"""Tasks: enqueue one (through this process's publisher), search executions, a task's
attempt timeline, and retry a dead letter with an edited payload."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from tracker.errors import NotFoundError
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.models import TaskTracker
from tracker.operations import audit, edits, search
from tracker.operations.actors import Actor
from tracker.web.access import api_operator
from tracker.web.api.params import Cursor, Limit, Text
from tracker.web.api.schemas import (
    Enqueued,
    EnqueueRequest,
    Execution,
    ExecutionDetail,
    ListOf,
    RetryRequest,
    Timeline,
    execution,
    execution_detail,
)
from tracker.web.context import operator_of, redacted
from tracker.web.unredact import edited_payload

router = APIRouter(tags=["tasks"])
MAX_METADATA_TERMS = 4


def metadata_terms(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``key:value`` pairs (a business key declared as indexed, and its value)."""
    if len(values) > MAX_METADATA_TERMS:
        raise ValueError(f"at most {MAX_METADATA_TERMS} metadata terms")
    terms = []
    for value in values:
        key, sep, wanted = value.partition(":")
        if not sep or not key:
            raise ValueError("metadata must be key:value")
        terms.append((key, wanted))
    return tuple(terms)


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    summary="Enqueue a task through this process's publisher (operator)",
)
async def enqueue(
    request: Request, body: EnqueueRequest, caller: Annotated[Actor, Depends(api_operator)]
) -> Enqueued:
    operator = operator_of(request)
    enqueuer = await operator.enqueuer()
    async with audit.audited(
        caller,
        "enqueue",
        body.task_id or body.queue,
        selection={"queue": body.queue, "task_id": body.task_id},
        redact_fields=operator.redact_fields,
    ) as outcome:
        result = await enqueuer.enqueue(body.queue, body.payload, body.task_id, body.metadata)
        outcome.result = {
            "task_id": result.task_id,
            "execution_id": result.execution_id,
            "deduplicated": result.deduplicated,
        }
    return Enqueued(
        task_id=result.task_id,
        execution_id=result.execution_id,
        deduplicated=result.deduplicated,
        status=result.status.value,
    )


@router.get("/tasks", summary="Search executions, newest first")
async def find(
    request: Request,
    task_id: Text = None,
    queue: Text = None,
    status: TaskStatus | None = None,
    category: ErrorCategory | None = None,
    group_id: Text = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: Annotated[
        list[str], Query(max_length=MAX_METADATA_TERMS, description="key:value")
    ] = [],  # noqa: B006 - FastAPI copies defaults per request
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ListOf[Execution]:
    query = search.TaskQuery(
        task_id=task_id,
        queue=queue,
        status=status,
        category=category.value if category else None,
        group_id=group_id,
        since=since,
        until=until,
        metadata=metadata_terms(metadata),
    )
    page = await search.find_executions(query, cursor=cursor, limit=limit)
    redact = lambda value: redacted(request, value)  # noqa: E731
    return ListOf[Execution](
        items=[execution(doc, redact) for doc in page.items], next_cursor=page.next_cursor
    )


@router.get("/tasks/{task_id:path}", summary="A task's attempt timeline, oldest first")
async def timeline(request: Request, task_id: str) -> Timeline:
    executions = await search.timeline(task_id)
    redact = lambda value: redacted(request, value)  # noqa: E731
    hiding = bool(operator_of(request).redact_fields)
    return Timeline(
        task_id=task_id,
        executions=[execution_detail(d, redact, redacting=hiding) for d in executions],
    )


@router.get("/executions/{execution_id:path}", summary="One execution in full")
async def one_execution(request: Request, execution_id: str) -> ExecutionDetail:
    found = await TaskTracker.find_execution(execution_id)
    if found is None:
        raise NotFoundError(f"no execution {execution_id!r}")
    hiding = bool(operator_of(request).redact_fields)
    return execution_detail(found, lambda value: redacted(request, value), redacting=hiding)


@router.post(
    "/executions/{execution_id:path}/retry",
    status_code=status.HTTP_201_CREATED,
    summary="Retry a dead letter with an edited payload (operator)",
)
async def retry(
    request: Request,
    execution_id: str,
    body: RetryRequest,
    caller: Annotated[Actor, Depends(api_operator)],
) -> ExecutionDetail:
    operator = operator_of(request)
    await operator.publisher()  # 503 before anything is written when nothing can publish
    payload = await edited_payload(execution_id, body.payload, operator.redact_fields)
    created = await edits.retry_with_payload(
        execution_id,
        payload,
        actor=caller,
        reason=body.reason,
        publish=operator.publish,
        redact_fields=operator.redact_fields,
    )
    return execution_detail(
        created,
        lambda value: redacted(request, value),
        redacting=bool(operator.redact_fields),
    )
