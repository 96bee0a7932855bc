"""Failure groups: list, one, and mute, unmute or resolve (operator, audited)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request

from tracker.operations import groups
from tracker.operations.actors import Actor
from tracker.web.access import api_operator
from tracker.web.api.params import Cursor, Limit, Text
from tracker.web.api.schemas import Group, ListOf, Reason
from tracker.web.context import operator_of

router = APIRouter(tags=["failure groups"])
GroupAction = Literal["mute", "unmute", "resolve"]
_ACTIONS = {"mute": groups.mute, "unmute": groups.unmute, "resolve": groups.resolve}


@router.get("/failure-groups", summary="Failure groups, most recently seen first")
async def list_groups(
    queue: Text = None,
    state: Literal["open", "resolved", "regressed"] | None = None,
    muted: bool | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ListOf[Group]:
    page = await groups.list_groups(
        queue=queue, state=state, muted=muted, cursor=cursor, limit=limit
    )
    total = await groups.count_groups(queue=queue, state=state, muted=muted)
    return ListOf[Group](
        items=[Group.of(g) for g in page.items], next_cursor=page.next_cursor, total=total
    )


@router.get("/failure-groups/{group_id}", summary="One failure group")
async def get_group(group_id: str) -> Group:
    group = await groups.get_group(group_id)
    return Group.of(group, dead_letters_left=await groups.dead_letters_left(group.id))


@router.post("/failure-groups/{group_id}/{action}", summary="Mute, unmute or resolve a group")
async def act(
    request: Request,
    group_id: str,
    action: GroupAction,
    caller: Annotated[Actor, Depends(api_operator)],
    body: Reason | None = None,
) -> Group:
    reason = body.reason if body is not None else None
    fields = operator_of(request).redact_fields
    return Group.of(await _ACTIONS[action](group_id, caller, reason, redact_fields=fields))
