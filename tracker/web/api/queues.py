"""``GET /api/v1/queues``: every tracked queue with its counts per status."""

from __future__ import annotations

from fastapi import APIRouter

from tracker.operations import search
from tracker.web.api.schemas import ListOf, Queue

router = APIRouter(tags=["queues"])


@router.get("/queues", summary="Queues: executions per status, failing groups")
async def queues() -> ListOf[Queue]:
    return ListOf[Queue](items=[Queue.of(q) for q in await search.queues()], next_cursor=None)
