"""The console's replays: a new one (a dry run first, then the real one from it), the list,
one replay with its live progress, pause, resume and cancel (operator)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from tracker.lifecycle import TaskStatus
from tracker.operations import replays
from tracker.operations.actors import Actor
from tracker.web import csrf
from tracker.web.context import operator_of
from tracker.web.pages.forms import field, integer, next_url, number
from tracker.web.pages.guard import ui_operator, ui_viewer
from tracker.web.pages.render import render

router = APIRouter()
Cursor = Annotated[str | None, Query(max_length=4096)]
Text = Annotated[str | None, Query(max_length=512)]
_ACTIONS = {"pause": replays.pause, "resume": replays.resume, "cancel": replays.cancel}
MAX_TASK_IDS = 10_000


@router.get("/replays", dependencies=[Depends(ui_viewer)])
async def list_replays(request: Request, cursor: Cursor = None) -> Response:
    page = await replays.list_replays(cursor=cursor or None)
    context = {"nav": "replays", "page": page, "next_url": next_url(request, page.next_cursor)}
    return render(request, "replays.html", context)


@router.get("/replays/new", dependencies=[Depends(ui_operator)])
async def new_replay(
    request: Request, group_id: Text = None, queue: Text = None, status: Text = None
) -> Response:
    form = dict.fromkeys(
        ("task_ids", "reason", "rate_per_second", "canary_size", "canary_max_failure_share")
    )
    form.update(group_id=group_id, queue=queue, status=status)
    return render(request, "replay_new.html", {"nav": "replays", "form": form})


@router.post("/replays", dependencies=[Depends(csrf.check_form)])
async def create(request: Request, caller: Annotated[Actor, Depends(ui_operator)]) -> Response:
    form = await request.form()
    fields = operator_of(request).redact_fields
    source = field(form, "from_dry_run")
    if source is not None:
        # The real replay of a dry run: the same selection and settings, frozen anew now.
        dry = await replays.get_replay(source)
        if not dry.dry_run:
            raise ValueError("only a dry run can be started as a replay")
        job = await replays.create_replay(
            dry.selection,
            actor=caller,
            reason=dry.reason,
            rate_per_second=dry.rate_per_second,
            canary_size=dry.canary_size,
            canary_max_failure_share=dry.canary_max_failure_share,
            redact_fields=fields,
        )
    else:
        ids = (field(form, "task_ids", 600_000) or "").split()
        if len(ids) > MAX_TASK_IDS:
            raise ValueError(f"at most {MAX_TASK_IDS} task ids")
        status = field(form, "status", 20)
        selection = replays.ReplaySelection(
            group_id=field(form, "group_id"),
            queue=field(form, "queue", 200),
            status=TaskStatus(status) if status else None,
            task_ids=tuple(ids),
        )
        job = await replays.create_replay(
            selection,
            actor=caller,
            reason=field(form, "reason", 500) or "",
            dry_run=field(form, "dry_run", 10) == "true",
            rate_per_second=number(form, "rate_per_second"),
            canary_size=integer(form, "canary_size"),
            canary_max_failure_share=number(form, "canary_max_failure_share"),
            redact_fields=fields,
        )
    return RedirectResponse(f"/replays/{quote(job.id, safe='')}", 303)


@router.get("/replays/{replay_id}", dependencies=[Depends(ui_viewer)])
async def replay(request: Request, replay_id: str, cursor: Cursor = None) -> Response:
    job = await replays.get_replay(replay_id)
    items = await replays.replay_items(job.id, cursor=cursor or None)
    context = {
        "nav": "replays",
        "j": job,
        "items": items,
        "next_url": next_url(request, items.next_cursor),
    }
    return render(request, "replay.html", context)


@router.get("/replays/{replay_id}/progress", dependencies=[Depends(ui_viewer)])
async def progress(request: Request, replay_id: str) -> Response:
    """The progress block alone, which the page polls while the replay runs."""
    job = await replays.get_replay(replay_id)
    return render(request, "_replay_progress.html", {"j": job})


@router.post("/replays/{replay_id}/{action}", dependencies=[Depends(csrf.check_form)])
async def act(
    request: Request,
    replay_id: str,
    action: Literal["pause", "resume", "cancel"],
    caller: Annotated[Actor, Depends(ui_operator)],
) -> Response:
    fields = operator_of(request).redact_fields
    job = await _ACTIONS[action](replay_id, caller, redact_fields=fields)
    return RedirectResponse(f"/replays/{quote(job.id, safe='')}", 303)
