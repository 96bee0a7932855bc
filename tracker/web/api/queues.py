"""``GET /api/v1/queues``: every tracked queue with its counts per status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tracker.operations import search
from tracker.web.api.schemas import ListOf, Queue

router = APIRouter(tags=["queues"])


@router.get("/queues", summary="Queues: executions per status, failing groups")
async def queues(
    name: Annotated[
        list[str] | None, Query(max_length=200, description="only these queues (with executions)")
    ] = None,
) -> ListOf[Queue]:
    found = await search.queues(name or None)
    return ListOf[Queue](items=[Queue.of(q) for q in found], next_cursor=None)
