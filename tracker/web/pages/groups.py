"""The console's failure groups: the list, one group with its dead letters, and mute,
unmute, resolve (operator)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from tracker.lifecycle import TaskStatus
from tracker.operations import groups, search
from tracker.operations.actors import Actor
from tracker.web import csrf
from tracker.web.context import operator_of
from tracker.web.pages.forms import next_url
from tracker.web.pages.guard import ui_operator, ui_viewer
from tracker.web.pages.render import render

router = APIRouter()
Cursor = Annotated[str | None, Query(max_length=4096)]
_ACTIONS = {"mute": groups.mute, "unmute": groups.unmute, "resolve": groups.resolve}


@router.get("/groups", dependencies=[Depends(ui_viewer)])
async def list_groups(
    request: Request,
    queue: Annotated[str | None, Query(max_length=200)] = None,
    state: Literal["open", "resolved", "regressed", ""] | None = None,
    muted: Literal["true", "false", ""] | None = None,
    cursor: Cursor = None,
) -> Response:
    flag = None if not muted else muted == "true"
    page = await groups.list_groups(
        queue=queue or None, state=state or None, muted=flag, cursor=cursor or None
    )
    context = {
        "nav": "groups",
        "filters": {"queue": queue, "state": state, "muted": flag},
        "page": page,
        "next_url": next_url(request, page.next_cursor),
    }
    return render(request, "groups.html", context)


@router.get("/groups/{group_id}", dependencies=[Depends(ui_viewer)])
async def group(request: Request, group_id: str, cursor: Cursor = None) -> Response:
    found = await groups.get_group(group_id)
    query = search.TaskQuery(group_id=found.id, status=TaskStatus.DLQ)
    page = await search.find_executions(query, cursor=cursor or None, limit=50)
    context = {
        "nav": "groups",
        "g": found,
        "page": page,
        "next_url": next_url(request, page.next_cursor),
    }
    return render(request, "group.html", context)


@router.post("/groups/{group_id}/{action}", dependencies=[Depends(csrf.check_form)])
async def act(
    request: Request,
    group_id: str,
    action: Literal["mute", "unmute", "resolve"],
    caller: Annotated[Actor, Depends(ui_operator)],
) -> Response:
    fields = operator_of(request).redact_fields
    await _ACTIONS[action](group_id, caller, None, redact_fields=fields)
    return RedirectResponse(f"/groups/{_quoted(group_id)}", 303)


def _quoted(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
