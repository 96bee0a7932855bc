"""Executions stuck past their own deadline: list them, and fail them as timed out (each
under its own timeout; the retry published through this process's publisher)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from tracker.operations import stuck
from tracker.operations.actors import Actor
from tracker.web.access import api_operator
from tracker.web.api.params import Bound, Seconds, Text
from tracker.web.api.schemas import Execution, ListOf, execution
from tracker.web.api.triage_schemas import FailedList, FailedOut, FailStuckRequest
from tracker.web.context import operator_of, redacted

router = APIRouter(tags=["stuck executions"])


@router.get("/stuck", summary="Executions processing past their deadline, longest first")
async def find(
    request: Request, queue: Text = None, older_than: Seconds = None, limit: Bound = 100
) -> ListOf[Execution]:
    found = await stuck.find_stuck(queue, older_than, limit=limit)
    redact = lambda value: redacted(request, value)  # noqa: E731
    return ListOf[Execution](
        items=[execution(doc, redact) for doc in found.executions],
        next_cursor=None,
        total=found.total,
    )


@router.post("/stuck/fail", summary="Fail stuck executions as timed out (operator)")
async def fail(
    request: Request, body: FailStuckRequest, caller: Annotated[Actor, Depends(api_operator)]
) -> FailedList:
    operator = operator_of(request)
    await operator.publisher()  # 503 before anything is written when nothing can publish
    done = await stuck.fail_stuck(body.execution_ids, actor=caller, publish=operator.publish)
    return FailedList(
        results=[
            FailedOut(
                execution_id=r.execution_id,
                task_id=r.task_id,
                outcome=r.outcome,
                timeout_seconds=r.timeout_seconds,
                next_execution_id=r.next_execution_id,
            )
            for r in done
        ]
    )
