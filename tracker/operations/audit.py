"""The audit log (collection ``tracker_audit``): who did what to which records, when, why
and with what result, for every operator action of the CLI, the API and the console.

An action that changes data is written before it runs and completed after (``audited``): a
process that dies in the middle leaves an entry saying the action started, never an action
without an entry. Selections and results are stored redacted and bounded.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog
from pymongo.errors import PyMongoError

from tracker.clock import as_utc, iso_utc
from tracker.operations.actors import Actor
from tracker.operations.pages import DEFAULT_LIMIT, Order, Page, count, fetch
from tracker.operations.redaction import redact
from tracker.store import connection
from tracker.store.errors import describe
from tracker.store.operator_records import AUDIT
from tracker.validation import check_optional_id, storable_text, storage_problem

log = structlog.get_logger("tracker.audit")

ACTIONS: Final = frozenset(
    {
        "retry",
        "edit_retry",
        "replay.start",
        "replay.dry_run",
        "replay.pause",
        "replay.resume",
        "replay.cancel",
        "archive",
        "purge",
        "stuck.fail",
        "group.mute",
        "group.unmute",
        "group.resolve",
        "enqueue",
    }
)
MAX_REASON_CHARS: Final = 2048
MAX_TARGET_CHARS: Final = 512
# A selection or a result larger than this is replaced by a note saying so.
MAX_DETAIL_BYTES: Final = 32 * 1024


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: datetime
    actor: str
    role: str
    via: str
    action: str
    target: str
    selection: dict[str, Any] | None
    reason: str | None
    result: dict[str, Any] | None


@dataclass
class Outcome:
    """What an ``audited`` action sets as its result before it ends."""

    result: dict[str, Any] = field(default_factory=dict)


async def record(
    actor: Actor,
    action: str,
    target: str,
    *,
    selection: Mapping[str, Any] | None = None,
    reason: str | None = None,
    result: Mapping[str, Any] | None = None,
    redact_fields: frozenset[str] = frozenset(),
) -> AuditEntry:
    """Write one entry now (``selection`` and ``result`` redacted with ``redact_fields``)."""
    entry = _entry(actor, action, target, selection, reason, result, redact_fields)
    await _collection().insert_one(_stored(entry))
    return entry


@contextlib.asynccontextmanager
async def audited(
    actor: Actor,
    action: str,
    target: str,
    *,
    selection: Mapping[str, Any] | None = None,
    reason: str | None = None,
    redact_fields: frozenset[str] = frozenset(),
) -> AsyncIterator[Outcome]:
    """Write the entry (result ``{"outcome": "started"}``), run the block, then complete the
    entry with the block's ``Outcome.result``, or with the error that ended it (re-raised).
    Nothing runs when the entry cannot be written."""
    entry = await record(
        actor,
        action,
        target,
        selection=selection,
        reason=reason,
        result={"outcome": "started"},
        redact_fields=redact_fields,
    )
    outcome = Outcome()
    try:
        yield outcome
    except BaseException as error:
        text = str(error).splitlines()[0] if str(error) else ""
        failed = {**outcome.result, "outcome": "error", "error": f"{type(error).__name__}: {text}"}
        await _complete(entry.id, failed, redact_fields)
        raise
    await _complete(entry.id, {"outcome": "done", **outcome.result}, redact_fields)


async def _complete(entry_id: str, result: dict[str, Any], fields: frozenset[str]) -> None:
    try:
        await _collection().update_one(
            {"_id": entry_id}, {"$set": {"result": _detail(result, fields)}}
        )
    except PyMongoError as error:
        # The action is done; its entry still says it started. Losing the result is better
        # than reporting a finished action as failed.
        log.warning("audit entry not completed", entry_id=entry_id, error=describe(error))


async def entries(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[AuditEntry]:
    """Entries, newest first, filtered by ``actor``, ``action``, ``target`` and time."""
    query = _filter(actor, action, target, since, until)
    page = await fetch(
        _collection(),
        query,
        Order("at"),
        cursor=cursor,
        limit=limit,
        low=since,
        high=until,
    )
    return Page([_parsed(doc) for doc in page.items], page.next_cursor)


async def count_entries(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many entries ``entries`` lists in all (see ``pages.count``)."""
    query = _filter(actor, action, target, since, until)
    for bound, operator in ((since, "$gte"), (until, "$lte")):
        if bound is not None:
            query.setdefault("at", {})[operator] = as_utc(bound)
    return await count(_collection(), query)


def _filter(
    actor: str | None,
    action: str | None,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            query[name] = check_optional_id(value, name)
    for bound in (since, until):
        if bound is not None and not isinstance(bound, datetime):
            raise TypeError(f"since and until must be datetimes, not {type(bound).__name__}")
    return query


def _entry(
    actor: Actor,
    action: str,
    target: str,
    selection: Mapping[str, Any] | None,
    reason: str | None,
    result: Mapping[str, Any] | None,
    fields: frozenset[str],
) -> AuditEntry:
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an Actor, not {type(actor).__name__}")
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if not isinstance(target, str) or not target:
        raise ValueError("an audit entry needs a target")
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"reason must be a string, not {type(reason).__name__}")
    return AuditEntry(
        id=uuid.uuid4().hex,
        at=connection.server_clock().estimate(),
        actor=actor.name,
        role=actor.role,
        via=actor.via,
        action=action,
        target=storable_text(target, MAX_TARGET_CHARS),
        selection=None if selection is None else _detail(selection, fields),
        reason=None if reason is None else storable_text(reason, MAX_REASON_CHARS),
        result=None if result is None else _detail(result, fields),
    )


def _detail(value: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """``value`` redacted, as JSON data (times as ISO text), within the size bound."""
    try:
        plain = json.loads(json.dumps(redact(dict(value), fields), default=_json_default))
    except (RecursionError, ValueError, TypeError) as error:
        return {"omitted": f"not JSON data: {type(error).__name__}"}
    problem = storage_problem(plain, "detail", MAX_DETAIL_BYTES)
    if problem is not None:
        return {"omitted": problem}
    return dict(plain)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _stored(entry: AuditEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": entry.id}
    doc.update({name: value for name, value in vars(entry).items() if name != "id"})
    return doc


def _parsed(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=str(doc["_id"]),
        at=as_utc(doc["at"]),
        actor=str(doc.get("actor", "")),
        role=str(doc.get("role", "")),
        via=str(doc.get("via", "")),
        action=str(doc.get("action", "")),
        target=str(doc.get("target", "")),
        selection=doc.get("selection"),
        reason=doc.get("reason"),
        result=doc.get("result"),
    )


def _collection() -> Any:
    return connection.database()[AUDIT]
