"""Dead letters as the command line selects them: list (by queue, category, age, failure
group or ids, with how many match), archive, purge what was archived, and import what the
broker dead-lettered without a record (``Q.dlq``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from tracker.lifecycle import ErrorCategory
from tracker.models import TaskTracker
from tracker.operations import dead_letters
from tracker.operations.actors import Actor
from tracker.web.access import api_operator
from tracker.web.api.params import Bound, Seconds, Text
from tracker.web.api.schemas import Execution, ListOf, execution
from tracker.web.api.triage_schemas import (
    ArchivedList,
    ArchivedOut,
    ArchiveRequest,
    ImportCounts,
    Imported,
    ImportRequest,
    Purged,
    PurgeRequest,
)
from tracker.web.context import operator_of, redacted

router = APIRouter(tags=["dead letters"])
ExecutionIds = Annotated[list[str], Query(max_length=1000, description="these executions")]


@router.get("/dead-letters", summary="Dead letters, newest first, with how many match")
async def find(
    request: Request,
    queue: Text = None,
    category: ErrorCategory | None = None,
    older_than: Seconds = None,
    group_id: Text = None,
    execution_id: ExecutionIds = [],  # noqa: B006 - FastAPI copies defaults per request
    limit: Bound = 100,
) -> ListOf[Execution]:
    selection = dead_letters.Selection(
        tuple(execution_id),
        queue,
        category.value if category else None,
        older_than,
        group_id,
        limit=limit,
    )
    found = [doc async for doc in dead_letters.select(selection)]
    redact = lambda value: redacted(request, value)  # noqa: E731
    return ListOf[Execution](
        items=[execution(doc, redact) for doc in found],
        next_cursor=None,
        total=await dead_letters.count_matching(selection),
    )


@router.post("/dead-letters/archive", summary="Archive dead letters with a reason (operator)")
async def archive(
    request: Request, body: ArchiveRequest, caller: Annotated[Actor, Depends(api_operator)]
) -> ArchivedList:
    entries = await TaskTracker.find(
        {"executionId": {"$in": body.execution_ids}, "status": "dlq"}
    ).to_list()
    described = {
        "execution_ids": body.execution_ids[:100],
        "queue": body.queue,
        "category": body.category.value if body.category else None,
        "older_than_seconds": body.older_than_seconds,
        "group": body.group_id,
    }
    done = await dead_letters.archive_dead_letters(
        entries,
        actor=caller,
        reason=body.reason,
        retention=body.retention_seconds,
        selection={k: v for k, v in described.items() if v not in (None, [])},
    )
    archived = {r.execution_id: r for r in done}
    return ArchivedList(
        results=[
            ArchivedOut(
                execution_id=eid,
                task_id=archived[eid].task_id if eid in archived else "",
                changed=archived[eid].changed if eid in archived else False,
            )
            for eid in dict.fromkeys(body.execution_ids)
        ]
    )


@router.post("/archived/purge", summary="Delete archived executions for good (operator)")
async def purge(body: PurgeRequest, caller: Annotated[Actor, Depends(api_operator)]) -> Purged:
    age = body.archived_older_than_seconds
    matched = await dead_letters.purge_archived(age, dry_run=True)
    if body.dry_run or matched == 0:
        return Purged(matched=matched, deleted=0)
    return Purged(matched=matched, deleted=await dead_letters.purge_archived(age, actor=caller))


@router.post(
    "/dead-letters/import", summary="Record what the broker dead-lettered untracked (operator)"
)
async def import_untracked(
    request: Request, body: ImportRequest, caller: Annotated[Actor, Depends(api_operator)]
) -> Imported:
    from tracker.rabbit.dlq_import import import_queues
    from tracker.rabbit.nodes import NoBrokerNodeError

    url = operator_of(request).amqp_url
    if url is None:
        raise HTTPException(503, "this process has no RabbitMQ connection to import with")
    try:
        reports = await import_queues(url, body.queues, dry_run=body.dry_run)
    except NoBrokerNodeError as error:
        raise HTTPException(503, str(error)) from error
    return Imported(queues={q: ImportCounts(**vars(r)) for q, r in reports.items()})
