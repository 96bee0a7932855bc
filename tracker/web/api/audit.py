"""``GET /api/v1/audit``: who did what, newest first."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from tracker.operations import audit
from tracker.web.api.params import Cursor, Limit, Text
from tracker.web.api.schemas import Audit, ListOf
from tracker.web.context import redacted

router = APIRouter(tags=["audit"])


@router.get("/audit", summary="The audit log, newest first")
async def entries(
    request: Request,
    actor: Text = None,
    action: Text = None,
    target: Text = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ListOf[Audit]:
    page = await audit.entries(
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    total = await audit.count_entries(
        actor=actor, action=action, target=target, since=since, until=until
    )
    redact = lambda value: redacted(request, value)  # noqa: E731
    return ListOf[Audit](
        items=[Audit.of(entry, redact) for entry in page.items],
        next_cursor=page.next_cursor,
        total=total,
    )
