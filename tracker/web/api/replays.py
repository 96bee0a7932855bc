"""Replays: start one (a dry run counts only), follow it, pause, resume or cancel it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, status

from tracker.lifecycle import TaskStatus
from tracker.operations import replays
from tracker.operations.actors import Actor
from tracker.operations.replay_jobs import freeze
from tracker.operations.replays import ReplayJob
from tracker.web.access import api_operator
from tracker.web.api.params import Cursor, Limit
from tracker.web.api.schemas import (
    ListOf,
    Reason,
    Replay,
    ReplayChoice,
    ReplayItemOut,
    ReplayRequest,
    ReplayStateName,
)
from tracker.web.api.triage_schemas import Matched
from tracker.web.context import operator_of

router = APIRouter(tags=["replays"])
ReplayAction = Literal["pause", "resume", "cancel"]
_ACTIONS = {"pause": replays.pause, "resume": replays.resume, "cancel": replays.cancel}
Outcome = Literal["pending", "republished", "succeeded", "failed", "skipped"]


@router.post(
    "/replays",
    status_code=status.HTTP_201_CREATED,
    summary="Start a replay (or only count it: dry_run), its selection frozen now (operator)",
)
async def create(
    request: Request, body: ReplayRequest, caller: Annotated[Actor, Depends(api_operator)]
) -> Replay:
    return Replay.of(await start(body, caller, redact_fields=operator_of(request).redact_fields))


@router.post("/replays/preview", summary="How many tasks a replay would run now (a read)")
async def preview(body: ReplayChoice) -> Matched:
    return Matched(matched=len(await freeze(selection_of(body))))


def selection_of(choice: ReplayChoice) -> replays.ReplaySelection:
    return replays.ReplaySelection(
        group_id=choice.group_id,
        queue=choice.queue,
        status=TaskStatus(choice.status) if choice.status else None,
        since=choice.since,
        until=choice.until,
        task_ids=tuple(choice.task_ids),
        execution_ids=tuple(choice.execution_ids),
        category=choice.category.value if choice.category else None,
    )


async def start(
    body: ReplayRequest, caller: Actor, *, redact_fields: frozenset[str] = frozenset()
) -> ReplayJob:
    """Create the job ``body`` asks for (the command line's own backend starts jobs here
    too, so both read a request the same way)."""
    selection = selection_of(body)
    options: dict[str, Any] = {}
    if body.follow_seconds is not None:
        options["follow_seconds"] = body.follow_seconds
    if "archived_retention_seconds" in body.model_fields_set:
        options["archived_retention"] = body.archived_retention_seconds
    return await replays.create_replay(
        selection,
        actor=caller,
        reason=body.reason,
        dry_run=body.dry_run,
        rate_per_second=body.rate_per_second,
        canary_size=body.canary_size,
        canary_max_failure_share=body.canary_max_failure_share,
        redact_fields=redact_fields,
        **options,
    )


@router.get("/replays", summary="Replays, newest first")
async def list_replays(
    state: ReplayStateName | None = None, cursor: Cursor = None, limit: Limit = 50
) -> ListOf[Replay]:
    page = await replays.list_replays(state=state, cursor=cursor, limit=limit)
    total = await replays.count_replays(state=state)
    return ListOf[Replay](
        items=[Replay.of(j) for j in page.items], next_cursor=page.next_cursor, total=total
    )


@router.get("/replays/{replay_id}", summary="A replay: its state and counts per outcome")
async def get_replay(replay_id: str) -> Replay:
    return Replay.of(await replays.get_replay(replay_id))


@router.get("/replays/{replay_id}/items", summary="A replay's items and their outcomes")
async def items(
    replay_id: str, outcome: Outcome | None = None, cursor: Cursor = None, limit: Limit = 50
) -> ListOf[ReplayItemOut]:
    page = await replays.replay_items(replay_id, outcome=outcome, cursor=cursor, limit=limit)
    return ListOf[ReplayItemOut](
        items=[ReplayItemOut.of(i) for i in page.items], next_cursor=page.next_cursor
    )


@router.post("/replays/{replay_id}/{action}", summary="Pause, resume or cancel a replay")
async def act(
    request: Request,
    replay_id: str,
    action: ReplayAction,
    caller: Annotated[Actor, Depends(api_operator)],
    body: Reason | None = None,
) -> Replay:
    fields = operator_of(request).redact_fields
    reason = body.reason if body is not None else None
    return Replay.of(await _ACTIONS[action](replay_id, caller, reason=reason, redact_fields=fields))
