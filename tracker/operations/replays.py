"""Replays: running many dead letters again as one durable job, safely and observably.

``create_replay`` freezes the selection into items (one per task) when the job is created;
a dry run only counts them. A ``ReplayRunner`` (``tracker serve`` runs one, ``tracker replay
start --run`` runs one in the command's process) republishes the items at the job's rate,
stops the job after its canary when too many of the first items fail again, follows each
item's new execution to its end, and resumes a job whose runner died (a lease on the job).
Operators pause, resume and cancel jobs; every action is audited.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any, Final

from tracker.constants import DEFAULT_ARCHIVED_RETENTION_SECONDS, OPERATIONS_RETENTION_SECONDS
from tracker.errors import ConflictError, NotFoundError
from tracker.operations import audit
from tracker.operations.actors import Actor
from tracker.operations.pages import DEFAULT_LIMIT, Order, Page, count, fetch
from tracker.operations.replay_jobs import (
    FINISHED,
    OUTCOMES,
    STATES,
    ReplayItem,
    ReplayJob,
    ReplaySelection,
    ReplayState,
    expire_items,
    freeze,
    item_from,
    items_collection,
    job_from,
    jobs_collection,
    recount,
)
from tracker.operations.replay_runner import EPOCH, ReplayRunner
from tracker.store import connection
from tracker.validation import check_count, check_id, storable_text

__all__ = [
    "ReplayItem",
    "ReplayJob",
    "ReplayRunner",
    "ReplaySelection",
    "ReplayState",
    "cancel",
    "count_replays",
    "create_replay",
    "get_replay",
    "list_replays",
    "pause",
    "replay_items",
    "resume",
]
MAX_RATE: Final = 1000.0
MAX_CANARY: Final = 1000
# How long a job follows its republished executions, by default, before it completes.
DEFAULT_FOLLOW_SECONDS: Final = 3600.0


async def create_replay(
    selection: ReplaySelection,
    *,
    actor: Actor,
    reason: str,
    dry_run: bool = False,
    rate_per_second: float | None = None,
    canary_size: int | None = None,
    canary_max_failure_share: float | None = None,
    follow_seconds: float = DEFAULT_FOLLOW_SECONDS,
    archived_retention: float | None = DEFAULT_ARCHIVED_RETENTION_SECONDS,
    redact_fields: frozenset[str] = frozenset(),
) -> ReplayJob:
    """A job over what ``selection`` matches now (one item per task); with ``dry_run``, only
    the count (state ``completed``, nothing run). ``reason`` is required. The canary: the
    first ``canary_size`` items run, then the job stops (state ``stopped``) if more than
    ``canary_max_failure_share`` (default 0) of them fail again. ``follow_seconds``: how
    long the job follows its new executions after the last is published;
    ``archived_retention``: how long the dead letters it archives are kept (None: forever).
    Audited."""
    if not isinstance(selection, ReplaySelection):
        raise TypeError(f"selection must be a ReplaySelection, not {type(selection).__name__}")
    actor.require_operator()
    options = _options(reason, rate_per_second, canary_size, canary_max_failure_share)
    follow = _bounded_float(follow_seconds, "follow_seconds", 0, 7 * 86400)
    job_id = uuid.uuid4().hex
    action = "replay.dry_run" if dry_run else "replay.start"
    async with audit.audited(
        actor,
        action,
        f"replay:{job_id}",
        selection=selection.as_document(),
        reason=options["reason"],
        redact_fields=redact_fields,
    ) as outcome:
        items = await freeze(selection)
        now = connection.server_clock().estimate()
        doc: dict[str, Any] = {
            "_id": job_id,
            "state": "completed" if dry_run else "pending",
            "selection": selection.as_document(),
            "dryRun": bool(dry_run),
            **options,
            "followSeconds": follow,
            "archivedRetention": None
            if archived_retention is None
            else _bounded_float(archived_retention, "archived_retention", 0, 100 * 365 * 86400),
            "matched": len(items),
            **dict.fromkeys(OUTCOMES, 0),
            "pending": 0 if dry_run else len(items),
            "createdBy": actor.name,
            "createdAt": now,
            "updatedAt": now,
            "leaseExpiresAt": EPOCH,
            "canaryPassed": not options["canarySize"],
        }
        if dry_run:
            doc.update(finishedAt=now, expiresAt=_expiry(now))
        else:
            await _store_items(job_id, items, now)
        await jobs_collection().insert_one(doc)
        outcome.result.update(matched=len(items), dry_run=bool(dry_run))
        return job_from(doc)


async def get_replay(replay_id: str) -> ReplayJob:
    doc = await jobs_collection().find_one({"_id": check_id(replay_id, "replay id")})
    if doc is None:
        raise NotFoundError(f"no replay {replay_id!r}")
    return job_from(doc)


async def list_replays(
    *, state: ReplayState | None = None, cursor: str | None = None, limit: int = DEFAULT_LIMIT
) -> Page[ReplayJob]:
    """Jobs, newest first, in ``state``."""
    query = _by_state(state)
    page = await fetch(jobs_collection(), query, Order("createdAt"), cursor=cursor, limit=limit)
    return Page([job_from(doc) for doc in page.items], page.next_cursor)


async def count_replays(*, state: ReplayState | None = None) -> int:
    """How many jobs ``list_replays`` lists in all (see ``pages.count``)."""
    return await count(jobs_collection(), _by_state(state))


def _by_state(state: str | None) -> dict[str, Any]:
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {str(state)[:40]!r}")
    return {} if state is None else {"state": state}


async def replay_items(
    replay_id: str,
    *,
    outcome: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[ReplayItem]:
    """The job's items in order, with ``outcome`` if given."""
    query: dict[str, Any] = {"replayId": check_id(replay_id, "replay id")}
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        query["outcome"] = outcome
    order = Order("position", kind="int", descending=False)
    page = await fetch(items_collection(), query, order, cursor=cursor, limit=limit)
    return Page([item_from(doc) for doc in page.items], page.next_cursor)


async def pause(replay_id: str, actor: Actor, **options: Any) -> ReplayJob:
    """Stop republishing after the current item; ``resume`` goes on from there."""
    return await _change(
        replay_id, actor, "replay.pause", ("pending", "running"), "paused", **options
    )


async def resume(replay_id: str, actor: Actor, **options: Any) -> ReplayJob:
    """Go on with a paused job, or with one its canary stopped (the canary then counts as
    passed: the operator has looked)."""
    return await _change(
        replay_id, actor, "replay.resume", ("paused", "stopped"), "running", **options
    )


async def cancel(replay_id: str, actor: Actor, **options: Any) -> ReplayJob:
    """End the job: items not yet republished are skipped ("cancelled")."""
    job = await _change(
        replay_id,
        actor,
        "replay.cancel",
        ("pending", "running", "paused", "stopped"),
        "cancelled",
        **options,
    )
    # An item its runner has begun (a new execution id chosen) is left to the runner.
    now = connection.server_clock().estimate()
    await items_collection().update_many(
        {"replayId": job.id, "outcome": "pending", "newExecutionId": None},
        {"$set": {"outcome": "skipped", "detail": "cancelled", "updatedAt": now}},
    )
    await recount(job.id)
    return await get_replay(job.id)


async def _change(
    replay_id: str,
    actor: Actor,
    action: str,
    sources: tuple[ReplayState, ...],
    target: ReplayState,
    *,
    reason: str | None = None,
    redact_fields: frozenset[str] = frozenset(),
) -> ReplayJob:
    check_id(replay_id, "replay id")
    actor.require_operator()
    async with audit.audited(
        actor, action, f"replay:{replay_id}", reason=reason, redact_fields=redact_fields
    ) as outcome:
        now = connection.server_clock().estimate()
        update: dict[str, Any] = {"state": target, "updatedAt": now}
        if action == "replay.resume":
            update["canaryPassed"] = True
        if target in FINISHED:
            update.update(finishedAt=now, expiresAt=await expire_items(replay_id, now))
        result = await jobs_collection().update_one(
            {"_id": replay_id, "state": {"$in": list(sources)}}, {"$set": update}
        )
        job = await get_replay(replay_id)
        if result.matched_count == 0:
            raise ConflictError(f"replay {replay_id} is {job.state}: it cannot be {target}")
        outcome.result["state"] = job.state
        return job


async def _store_items(job_id: str, items: list[dict[str, Any]], now: Any) -> None:
    """The job's items, stored before the job itself: a job never lacks its items."""
    docs = [
        {
            "_id": f"{job_id}:{position}",
            "replayId": job_id,
            "position": position,
            "taskId": item["taskId"],
            "executionId": item["executionId"],
            "queue": item["queue"],
            "supersedes": item["supersedes"],
            "outcome": "pending",
            "attempts": 0,
            "updatedAt": now,
            # Removed with their job; this bounds items whose job was never stored.
            "expiresAt": now + timedelta(seconds=2 * OPERATIONS_RETENTION_SECONDS),
        }
        for position, item in enumerate(items)
    ]
    for start in range(0, len(docs), 1000):
        await items_collection().insert_many(docs[start : start + 1000])


def _options(
    reason: object, rate: float | None, canary: int | None, share: float | None
) -> dict[str, Any]:
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a string, not {type(reason).__name__}")
    if not reason.strip():
        raise ValueError("a reason is required: say why these tasks run again")
    if rate is not None:
        rate = _bounded_float(rate, "rate_per_second", 0.001, MAX_RATE)
    if canary is not None:
        check_count(canary, "canary_size", MAX_CANARY)
        if canary == 0:
            raise ValueError("canary_size must be at least 1 (or None: no canary)")
    if share is not None:
        if canary is None:
            raise ValueError("canary_max_failure_share needs a canary_size")
        share = _bounded_float(share, "canary_max_failure_share", 0.0, 1.0)
    return {
        "reason": storable_text(reason.strip(), audit.MAX_REASON_CHARS),
        "ratePerSecond": rate,
        "canarySize": canary,
        "canaryMaxFailureShare": (share or 0.0) if canary else None,
    }


def _bounded_float(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{what} must be from {low:g} to {high:g}, not {value!r}")
    return float(value)


def _expiry(now: Any) -> Any:
    return now + timedelta(seconds=OPERATIONS_RETENTION_SECONDS)
