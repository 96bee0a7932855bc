"""The console's reading pages: the overview, search and the audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from tracker.clock import utcnow
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.operations import audit, groups, search
from tracker.store import connection
from tracker.web.api.tasks import metadata_terms
from tracker.web.context import redacted
from tracker.web.pages.forms import moment, next_url
from tracker.web.pages.guard import ui_viewer
from tracker.web.pages.render import render

router = APIRouter(dependencies=[Depends(ui_viewer)])
Text = Annotated[str | None, Query(max_length=600)]
FAILING_SHOWN = 20
RATE_BOUND = 1_000_000


async def _rates() -> dict[str, int]:
    """Executions that completed, and that were dead-lettered, in the last hour (by their
    last update, on the index {status, updatedAt}; counted up to a bound)."""
    since = utcnow() - timedelta(hours=1)
    counts = {}
    for name, status in (("completed", TaskStatus.COMPLETED), ("dead_lettered", TaskStatus.DLQ)):
        query = {"status": status.value, "updatedAt": {"$gte": since}}
        counts[name] = await connection.collection().count_documents(query, limit=RATE_BOUND)
    return counts


@router.get("/")
async def overview(request: Request) -> Response:
    queues = await search.queues()
    failing: list[Any] = []
    for state in ("regressed", "open"):
        page = await groups.list_groups(state=state, muted=False, limit=FAILING_SHOWN)
        failing.extend(page.items)
    totals = {s.value: sum(q.counts.get(s.value, 0) for q in queues) for s in TaskStatus}
    context = {
        "nav": "overview",
        "queues": queues,
        "statuses": [s.value for s in TaskStatus],
        "totals": totals,
        "failing": failing[:FAILING_SHOWN],
        "more_failing": len(failing) > FAILING_SHOWN,
        "rates": await _rates(),
    }
    return render(request, "overview.html", context)


@router.get("/search")
async def find(
    request: Request,
    task_id: Text = None,
    queue: Text = None,
    status: Text = None,
    category: Text = None,
    group_id: Text = None,
    metadata: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    form = {
        "task_id": task_id,
        "queue": queue,
        "status": status,
        "category": category,
        "group_id": group_id,
        "metadata": metadata,
        "since": since,
        "until": until,
    }
    context: dict[str, Any] = {
        "nav": "search",
        "form": form,
        "statuses": [s.value for s in TaskStatus],
        "categories": [c.value for c in ErrorCategory],
        "page": None,
        "next_url": None,
        "error": None,
    }
    if any(form.values()):
        try:
            query = search.TaskQuery(
                task_id=task_id or None,
                queue=queue or None,
                status=TaskStatus(status) if status else None,
                category=ErrorCategory(category).value if category else None,
                group_id=group_id or None,
                since=moment(since),
                until=moment(until),
                metadata=metadata_terms([metadata]) if metadata else (),
            )
            page = await search.find_executions(query, cursor=cursor or None, limit=50)
        except (ValueError, TypeError) as error:
            context["error"] = str(error)
            return render(request, "search.html", context, status=400)
        context["page"] = page
        context["next_url"] = next_url(request, page.next_cursor)
    return render(request, "search.html", context)


@router.get("/audit")
async def audit_log(
    request: Request,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=512)] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    page = await audit.entries(
        actor=actor or None, action=action or None, target=target or None, cursor=cursor or None
    )
    items = [
        {
            **vars(e),
            "selection": redacted(request, e.selection),
            "result": redacted(request, e.result),
        }
        for e in page.items
    ]
    context = {
        "nav": "audit",
        "form": {"actor": actor, "action": action, "target": target},
        "entries": items,
        "next_url": next_url(request, page.next_cursor),
    }
    return render(request, "audit.html", context)
