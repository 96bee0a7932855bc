"""Failure groups (collection ``tracker_failure_groups``): one document per cause, kept up
to date as dead letters arrive, never recomputed when someone looks.

A cause is (queue, error category, error type, message signature); its id, ``group_id()``, is
stored on each of its dead letters as ``groupId`` and is the one id the CLI, the API, the
console and the alerts use. A group is ``open``, ``resolved`` (by an operator, or by the
tracker once none of its dead letters is left) or ``regressed`` (a dead letter arrived after
it was resolved); ``muted`` is a flag beside the state: a muted group is still counted, but
never alerts. Resolved groups are kept 90 days after their last resolution.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import structlog
from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from tracker.clock import as_utc
from tracker.constants import MAX_ERROR_MESSAGE_CHARS, OPERATIONS_RETENTION_SECONDS
from tracker.errors import ConflictError, NotFoundError
from tracker.lifecycle import TaskStatus
from tracker.operations import audit
from tracker.operations.actors import SERVICE, Actor
from tracker.operations.pages import DEFAULT_LIMIT, Order, Page, count, fetch
from tracker.store import connection
from tracker.store.errors import describe
from tracker.store.operator_records import GROUPS
from tracker.validation import check_id, storable_text

log = structlog.get_logger("tracker.groups")

GroupState = Literal["open", "resolved", "regressed"]
STATES: Final = ("open", "resolved", "regressed")
MAX_SIGNATURE_CHARS: Final = 500

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b(?:0x[0-9a-f]+|(?=[0-9a-f]*\d)[0-9a-f]{8,})\b", re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def signature(message: str | None) -> str:
    """``message`` with its variable parts (ids, hex, quoted values, numbers) replaced by
    placeholders, so failures that differ only in those share a group."""
    text = storable_text(message or "", MAX_ERROR_MESSAGE_CHARS)
    text = _UUID.sub("<id>", text)
    text = _QUOTED.sub("<value>", text)
    text = _HEX.sub("<id>", text)
    return _NUMBER.sub("<n>", text)[:MAX_SIGNATURE_CHARS]


def group_id(queue: str, category: str | None, error_type: str | None, message: str | None) -> str:
    """The id of the cause: 16 hex digits of a SHA-256 over queue, category, error type and
    the message's signature."""
    parts = (queue, category or "unknown", error_type or "", signature(message))
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "backslashreplace"))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FailureGroup:
    id: str
    queue: str
    category: str
    error_type: str
    signature: str
    state: GroupState
    muted: bool
    count: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str
    sample_execution_id: str | None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


async def note_dead_letter(
    queue: str,
    category: str | None,
    error_type: str | None,
    message: str | None,
    execution_id: str,
    at: datetime | None = None,
) -> str:
    """Count one more dead letter of its cause, in one atomic upsert: the group is created
    ``open``, or a ``resolved`` one becomes ``regressed``; the muted flag is kept. Returns
    the group id (the dead letter's ``groupId``)."""
    check_id(queue, "queue")
    check_id(execution_id, "execution_id")
    gid = group_id(queue, category, error_type, message)
    when = connection.server_clock().estimate() if at is None else as_utc(at)
    was_resolved = {"$eq": ["$state", "resolved"]}
    fields = {
        "queue": queue,
        "category": category or "unknown",
        "errorType": error_type or "",
        "signature": signature(message),
        "sampleMessage": storable_text(message or "", MAX_ERROR_MESSAGE_CHARS),
        "sampleExecutionId": execution_id,
    }
    update = {
        # Stored text goes in as literals: a message starting with "$" is not a field path.
        **{name: {"$literal": value} for name, value in fields.items()},
        "state": {"$cond": [was_resolved, "regressed", {"$ifNull": ["$state", "open"]}]},
        "muted": {"$ifNull": ["$muted", False]},
        "count": {"$add": [{"$ifNull": ["$count", 0]}, 1]},
        "firstSeen": {"$ifNull": ["$firstSeen", when]},
        "lastSeen": {"$max": ["$lastSeen", when]},
        "regressedAt": {"$cond": [was_resolved, when, "$regressedAt"]},
        # A regressed group is kept: null is no date, so the TTL index leaves it.
        "expiresAt": {"$cond": [was_resolved, None, "$expiresAt"]},
        "updatedAt": when,
    }
    await _groups().update_one({"_id": gid}, [{"$set": update}], upsert=True)
    return gid


async def noted(
    queue: str,
    category: str | None,
    error_type: str | None,
    message: str | None,
    execution_id: str,
) -> None:
    """``note_dead_letter`` for the paths that record dead letters: the dead letter is
    already durable and its ``groupId`` set, so a store error here is logged, not raised (the
    next dead letter of the cause brings the group back)."""
    try:
        await note_dead_letter(queue, category, error_type, message, execution_id)
    except PyMongoError as error:
        log.warning("failure group not updated", execution_id=execution_id, error=describe(error))


async def get_group(group_id: str) -> FailureGroup:
    """The group ``group_id``; ``NotFoundError`` when there is none."""
    doc = await _groups().find_one({"_id": check_id(group_id, "group id")})
    if doc is None:
        raise NotFoundError(f"no failure group {group_id!r}")
    return from_document(doc)


async def list_groups(
    *,
    queue: str | None = None,
    state: GroupState | None = None,
    muted: bool | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[FailureGroup]:
    """Groups, most recently seen first, of ``queue``, in ``state``, muted or not."""
    query = _list_query(queue, state, muted)
    page = await fetch(_groups(), query, Order("lastSeen"), cursor=cursor, limit=limit)
    return Page([from_document(doc) for doc in page.items], page.next_cursor)


async def count_groups(
    *, queue: str | None = None, state: GroupState | None = None, muted: bool | None = None
) -> int:
    """How many groups ``list_groups`` lists in all (see ``pages.count``)."""
    return await count(_groups(), _list_query(queue, state, muted))


def _list_query(queue: str | None, state: str | None, muted: bool | None) -> dict[str, Any]:
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {str(state)[:40]!r}")
    if muted is not None and not isinstance(muted, bool):
        raise TypeError(f"muted must be a bool, not {type(muted).__name__}")
    states: Any = state if state is not None else {"$in": list(STATES)}
    query: dict[str, Any] = {}
    if queue is not None:
        query = {"queue": check_id(queue, "queue"), "state": states}
    elif state is not None or muted is not None:
        query = {"state": states}
    if muted is not None:
        query["muted"] = muted
    return query


async def mute(
    group_id: str, actor: Actor, reason: str | None = None, **options: Any
) -> FailureGroup:
    """Mute the group: still counted, never alerting. Audited; muting a muted group changes
    nothing."""
    return await _flag(group_id, actor, reason, True, **options)


async def unmute(
    group_id: str, actor: Actor, reason: str | None = None, **options: Any
) -> FailureGroup:
    """Let the group alert again. Audited."""
    return await _flag(group_id, actor, reason, False, **options)


async def _flag(
    group_id: str,
    actor: Actor,
    reason: str | None,
    muted: bool,
    *,
    redact_fields: frozenset[str] = frozenset(),
) -> FailureGroup:
    check_id(group_id, "group id")
    actor.require_operator()
    action = "group.mute" if muted else "group.unmute"
    async with audit.audited(
        actor, action, f"group:{group_id}", reason=reason, redact_fields=redact_fields
    ) as outcome:
        now = connection.server_clock().estimate()
        result = await _groups().update_one(
            {"_id": group_id, "muted": {"$ne": muted}},
            {"$set": {"muted": muted, "mutedBy": actor.name, "mutedAt": now, "updatedAt": now}},
        )
        outcome.result["changed"] = result.matched_count == 1
        return await get_group(group_id)


async def resolve(
    group_id: str,
    actor: Actor,
    reason: str | None = None,
    *,
    redact_fields: frozenset[str] = frozenset(),
) -> FailureGroup:
    """Mark the group resolved (the next dead letter of its cause regresses it). Audited;
    ``ConflictError`` when it is resolved already."""
    check_id(group_id, "group id")
    actor.require_operator()
    async with audit.audited(
        actor, "group.resolve", f"group:{group_id}", reason=reason, redact_fields=redact_fields
    ) as outcome:
        doc = await _groups().find_one_and_update(
            {"_id": group_id, "state": {"$ne": "resolved"}},
            {"$set": _resolution(actor)},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            current = await get_group(group_id)
            raise ConflictError(f"failure group {group_id} is {current.state} already")
        outcome.result["dead_letters_left"] = await dead_letters_left(group_id)
        return from_document(doc)


async def dead_letters_left(group_id: str) -> int:
    """How many of the group's dead letters are still in the dead-letter queue."""
    return await connection.collection().count_documents(
        {"groupId": group_id, "status": TaskStatus.DLQ.value}
    )


async def settle(group_ids: Iterable[str]) -> list[str]:
    """Resolve, as the tracker, each of ``group_ids`` none of whose dead letters is left
    (after an archive or a retry); the ids resolved. A dead letter noted meanwhile changes
    the group's count, and then the group is left as it is."""
    resolved = []
    for gid in sorted(set(group_ids)):
        doc = await _groups().find_one({"_id": gid}, projection={"count": 1, "state": 1})
        if doc is None or doc.get("state") == "resolved" or await dead_letters_left(gid):
            continue
        guard = {"_id": gid, "count": doc.get("count"), "state": doc.get("state")}
        changed = await _groups().update_one(guard, {"$set": _resolution(SERVICE)})
        if changed.modified_count:
            resolved.append(gid)
            await audit.record(SERVICE, "group.resolve", f"group:{gid}", result={"automatic": True})
    return resolved


def _resolution(actor: Actor) -> dict[str, Any]:
    now = connection.server_clock().estimate()
    return {
        "state": "resolved",
        "resolvedAt": now,
        "resolvedBy": actor.name,
        "updatedAt": now,
        "expiresAt": now + timedelta(seconds=OPERATIONS_RETENTION_SECONDS),
    }


def from_document(doc: Mapping[str, Any]) -> FailureGroup:
    resolved_at = doc.get("resolvedAt")
    return FailureGroup(
        id=str(doc["_id"]),
        queue=str(doc.get("queue", "")),
        category=str(doc.get("category", "unknown")),
        error_type=str(doc.get("errorType", "")),
        signature=str(doc.get("signature", "")),
        state=doc.get("state", "open"),
        muted=bool(doc.get("muted", False)),
        count=int(doc.get("count", 0)),
        first_seen=as_utc(doc["firstSeen"]),
        last_seen=as_utc(doc["lastSeen"]),
        sample_message=str(doc.get("sampleMessage", "")),
        sample_execution_id=doc.get("sampleExecutionId"),
        resolved_at=None if resolved_at is None else as_utc(resolved_at),
        resolved_by=doc.get("resolvedBy"),
    )


def _groups() -> Any:
    return connection.database()[GROUPS]
