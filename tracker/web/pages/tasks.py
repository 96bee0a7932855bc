"""The console's task page: every attempt of a task on a timeline, and edit and retry of a
dead letter (operator)."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from tracker.operations import edits, search
from tracker.operations.actors import Actor
from tracker.web import csrf
from tracker.web.context import operator_of, redacted
from tracker.web.pages.forms import field
from tracker.web.pages.guard import ui_operator, ui_viewer
from tracker.web.pages.render import render
from tracker.web.unredact import edited_payload

router = APIRouter()
MAX_PAYLOAD_CHARS = 2_000_000


@router.get("/tasks/{task_id:path}", dependencies=[Depends(ui_viewer)])
async def task(request: Request, task_id: str) -> Response:
    executions = await search.timeline(task_id)
    context = {
        "nav": "search",
        "task_id": task_id,
        "executions": executions,
        "payloads": [redacted(request, e.payload) for e in executions],
        "results": [redacted(request, e.result) for e in executions],
    }
    return render(request, "task.html", context)


@router.post("/executions/{execution_id:path}/retry", dependencies=[Depends(csrf.check_form)])
async def retry(
    request: Request, execution_id: str, caller: Annotated[Actor, Depends(ui_operator)]
) -> Response:
    form = await request.form()
    text = field(form, "payload", MAX_PAYLOAD_CHARS)
    try:
        edited = json.loads(text or "")
    except ValueError:
        raise ValueError("the payload is not valid JSON") from None
    operator = operator_of(request)
    await operator.publisher()  # 503 before anything is written when nothing can publish
    created = await edits.retry_with_payload(
        execution_id,
        await edited_payload(execution_id, edited, operator.redact_fields),
        actor=caller,
        reason=field(form, "reason", 500) or "",
        publish=operator.publish,
        redact_fields=operator.redact_fields,
    )
    return RedirectResponse(f"/tasks/{quote(created.task_id, safe='')}", 303)
