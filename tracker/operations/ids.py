"""Finding what an operator means by an id: an execution id, a task id, a failure group or a
replay, whole or by a prefix (the docs and the console shorten ids), so every command and
endpoint that takes an id takes the same forms.

Each kind is looked up on an index whose first field is the id (``executionId``,
``taskId``, ``_id``): an exact match is one lookup, a prefix a range on that index read at
most ``MAX_CANDIDATES + 1`` entries deep. Nothing of the caller's text becomes a query
operator: a prefix is a pair of string bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from tracker.store import connection
from tracker.store.operator_records import GROUPS, REPLAYS
from tracker.validation import check_id

Kind = Literal["execution", "task", "group", "replay"]
KINDS: Final = ("execution", "task", "group", "replay")
MAX_CANDIDATES: Final = 10
# The last code point; a prefix ending in it has no string just above its range.
_TOP: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)


@dataclass(frozen=True)
class IdMatch:
    """One thing an id names: its kind and whole id; for executions and tasks, the task,
    queue and status (of a task: its newest execution's)."""

    kind: Kind
    id: str
    task_id: str | None = None
    queue: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class IdMatches:
    """``exact``: what the text names whole (at most one per kind); ``prefixed``: what it
    begins (at most ``MAX_CANDIDATES``, the exact ones left out); ``more``: others begin it
    too."""

    exact: list[IdMatch]
    prefixed: list[IdMatch]
    more: bool


async def find_ids(text: str, kinds: Sequence[Kind]) -> IdMatches:
    """What ``text`` names or begins among ``kinds``, in the order of ``kinds``."""
    check_id(text, "id")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}, not {unknown or 'none'}")
    exact: list[IdMatch] = []
    prefixed: list[IdMatch] = []
    more = False
    for kind in dict.fromkeys(kinds):
        found = await _FINDERS[kind](text)
        exact += [m for m in found if m.id == text]
        prefixed += [m for m in found if m.id != text]
    if len(prefixed) > MAX_CANDIDATES:
        prefixed, more = prefixed[:MAX_CANDIDATES], True
    return IdMatches(exact, prefixed, more)


def prefix_range(prefix: str) -> dict[str, str]:
    """The bounds of the strings that begin with ``prefix``, in MongoDB's (binary UTF-8,
    that is code point) order: from ``prefix`` up to, excluding, the first string above
    them all."""
    chars = list(prefix)
    while chars:
        point = ord(chars[-1]) + 1
        if point in _SURROGATES:
            point = _SURROGATES.stop
        if point <= _TOP:
            return {"$gte": prefix, "$lt": "".join(chars[:-1]) + chr(point)}
        chars.pop()
    return {"$gte": prefix}


async def _executions(text: str) -> list[IdMatch]:
    found = (
        connection.collection()
        .find(
            {"executionId": prefix_range(text)},
            projection=_SUMMARY,
            sort=[("executionId", 1)],
        )
        .limit(MAX_CANDIDATES + 1)
    )
    return [
        IdMatch("execution", doc["executionId"], doc.get("taskId"), doc.get("queueName"), _of(doc))
        for doc in await found.to_list(MAX_CANDIDATES + 1)
        if str(doc.get("executionId", "")).startswith(text)
    ]


async def _tasks(text: str) -> list[IdMatch]:
    """Distinct task ids from ``text`` on: one lookup each on the task index, so a task with
    many executions costs no more than one with a single execution."""
    bounds = prefix_range(text)
    matches: list[IdMatch] = []
    low: dict[str, str] = {"$gte": text}
    while len(matches) <= MAX_CANDIDATES:
        found = (
            await connection.collection()
            .find({"taskId": {**bounds, **low}}, projection=_SUMMARY, sort=[("taskId", 1)])
            .limit(1)
            .to_list(1)
        )
        if not found or not str(found[0].get("taskId", "")).startswith(text):
            break
        task_id = found[0]["taskId"]
        newest = await _newest(task_id)
        matches.append(IdMatch("task", task_id, task_id, newest.get("queueName"), _of(newest)))
        low = {"$gt": task_id}
    return matches


async def _newest(task_id: str) -> dict[str, Any]:
    found = (
        connection.collection()
        .find({"taskId": task_id}, projection=_SUMMARY, sort=[("createdAt", -1)])
        .limit(1)
    )
    return (await found.to_list(1) or [{}])[0]


async def _groups(text: str) -> list[IdMatch]:
    return await _by_key(GROUPS, "group", text, queue="queue", status="state")


async def _replays(text: str) -> list[IdMatch]:
    return await _by_key(REPLAYS, "replay", text, queue=None, status="state")


async def _by_key(
    collection: str, kind: Kind, text: str, *, queue: str | None, status: str
) -> list[IdMatch]:
    fields = {name: 1 for name in (queue, status) if name is not None}
    found = (
        connection.database()[collection]
        .find({"_id": prefix_range(text)}, projection=fields, sort=[("_id", 1)])
        .limit(MAX_CANDIDATES + 1)
    )
    return [
        IdMatch(kind, doc["_id"], None, doc.get(queue) if queue else None, doc.get(status))
        for doc in await found.to_list(MAX_CANDIDATES + 1)
        if isinstance(doc.get("_id"), str) and doc["_id"].startswith(text)
    ]


def _of(doc: dict[str, Any]) -> str | None:
    status = doc.get("status")
    return str(status) if status is not None else None


_SUMMARY: Final = {"_id": 0, "executionId": 1, "taskId": 1, "queueName": 1, "status": 1}
_FINDERS: Final = {
    "execution": _executions,
    "task": _tasks,
    "group": _groups,
    "replay": _replays,
}
