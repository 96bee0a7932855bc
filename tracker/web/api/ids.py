"""Who the caller is, and what an id names: whole or by a prefix, among executions, tasks,
failure groups and replays (the command line resolves the ids it is given here)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from tracker.operations import ids
from tracker.operations.actors import Actor
from tracker.web.access import api_viewer
from tracker.web.api.triage_schemas import IdMatchesOut, Me

router = APIRouter(tags=["ids"])
Kind = Literal["execution", "task", "group", "replay"]


@router.get("/me", summary="The caller: name (as audited) and role")
async def me(caller: Annotated[Actor, Depends(api_viewer)]) -> Me:
    return Me(name=caller.name, role=caller.role, via=caller.via)


@router.get("/ids", summary="What an id, or the start of one, names")
async def find(
    text: Annotated[str, Query(min_length=1, max_length=512, description="an id or a prefix")],
    kind: Annotated[list[Kind], Query(min_length=1, max_length=4)],
) -> IdMatchesOut:
    return IdMatchesOut.of(await ids.find_ids(text, kind))
