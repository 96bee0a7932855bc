"""The writes that apply the transition table (``tracker.lifecycle``).

Every transition is one conditional update on the execution's current status (and claim
token, when the caller holds one). It appends to ``history`` and sets ``updatedAt`` in the
same write and returns ``(new_status, changed_by_this_call)``, as the
query state machine's ``trigger_event`` does. A change the table forbids raises; nothing is
ever overwritten. The filter names the execution by ``taskId`` and ``executionId``, so the
write is routed to one shard of a collection sharded on ``{taskId: 1}``.

``apply`` takes a batch of transitions, each with its own filter and its own result, so that
callers do not change when several deliveries' outcomes are written together.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne

from tracker.constants import HISTORY_LIMIT
from tracker.errors import (
    InvalidTransitionError,
    StaleClaimError,
    TaskNotFoundError,
    TrackerError,
)
from tracker.lifecycle import ENTERED_AT, TaskStatus, sources
from tracker.store import connection
from tracker.store.bulk import update_each
from tracker.store.errors import is_store_error, is_transient
from tracker.validation import check_id, check_optional_id

TransitionResult = tuple[TaskStatus, bool]
# Stored fields a transition may not set through ``fields``: the transition's own.
_OWN_FIELDS = frozenset({"status", "history", "updatedAt", "executionId", "taskId"})


@dataclass(frozen=True)
class Transition:
    """One status change: ``fields`` (stored names) are written in the same update; a None
    value removes the field. ``task_id`` routes the write (looked up when not given)."""

    execution_id: str
    target: TaskStatus
    claim_token: str | None = None
    message: str = ""
    worker: str | None = None
    fields: Mapping[str, Any] | None = None
    task_id: str | None = None


def history_entry(
    status: TaskStatus, at: Any, message: str = "", worker: str | None = None
) -> dict[str, Any]:
    """One ``history`` element; ``at`` is a time or a pipeline expression of one."""
    entry: dict[str, Any] = {"status": status.value, "at": at, "message": message}
    if worker is not None:
        entry["worker"] = worker
    return entry


async def apply(batch: Sequence[Transition]) -> list[TransitionResult | Exception]:
    """Apply each transition of ``batch``; each result is ``(target, changed)`` or the error
    that explains a refusal (``StaleClaimError``, ``InvalidTransitionError``,
    ``TaskNotFoundError``, or a store error that refused that write alone). An error of the
    whole batch is raised.

    Several transitions go out as one unordered bulk write. When some of them find their
    execution already at the target, the count of writes applied may not say which of them
    applied: then each reports ``changed`` False, as a write repeated after its reply was
    lost does."""
    several = len(batch) > 1 and len({change.execution_id for change in batch}) == len(batch)
    if not several:
        return [await _apply_one(change) for change in batch]
    try:
        return await _apply_batch(batch)
    except Exception as error:
        if is_transient(error) or not is_store_error(error):
            raise
        # The batch as a whole was refused (nothing of it applied): each write alone finds
        # the one that cannot be made.
        return [await _alone(change) for change in batch]


async def _alone(change: Transition) -> TransitionResult | Exception:
    try:
        return await _apply_one(change)
    except Exception as error:
        if is_transient(error) or not is_store_error(error):
            raise
        return error


async def transition(
    execution_id: str,
    target: TaskStatus,
    *,
    claim_token: str | None = None,
    message: str = "",
    worker: str | None = None,
    fields: Mapping[str, Any] | None = None,
    task_id: str | None = None,
) -> TransitionResult:
    """Move ``execution_id`` to ``target`` if the table allows it from its current status.

    ``fields`` are stored (camelCase names) in the same write. Returns ``(target, True)`` when
    this call made the change and ``(target, False)`` when the execution was already there.
    Raises ``StaleClaimError`` when ``claim_token`` no longer holds the execution,
    ``InvalidTransitionError`` when the table forbids the change, ``TaskNotFoundError``;
    ``TypeError``/``ValueError`` for ids that are not ids.
    """
    check_id(execution_id, "execution_id")
    check_optional_id(claim_token, "claim_token")
    check_optional_id(worker, "worker")
    check_optional_id(task_id, "task_id")
    if not isinstance(target, TaskStatus):
        raise TypeError(f"target must be a TaskStatus, not {type(target).__name__}")
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, not {type(message).__name__}")
    [result] = await apply(
        [Transition(execution_id, target, claim_token, message, worker, fields, task_id)]
    )
    if isinstance(result, Exception):
        raise result
    return result


async def _apply_one(change: Transition) -> TransitionResult | TrackerError:
    query = await _query(change)
    if isinstance(query, TrackerError):
        return query
    result = await connection.collection().update_one(query, _update(change))
    if result.matched_count == 1:
        return change.target, True
    doc = await connection.collection().find_one(
        {"taskId": query["taskId"], "executionId": change.execution_id},
        projection=_EXPLAIN_PROJECTION,
    )
    return _refusal(change, doc)


async def _apply_batch(batch: Sequence[Transition]) -> list[TransitionResult | Exception]:
    results: list[TransitionResult | Exception | None] = [None] * len(batch)
    writes: list[tuple[int, dict[str, Any]]] = []
    for index, change in enumerate(batch):
        query = await _query(change)
        if isinstance(query, TrackerError):
            results[index] = query
        else:
            writes.append((index, query))
    outcome = await update_each([UpdateOne(query, _update(batch[i])) for i, query in writes])
    for position, error in outcome.errors.items():
        results[writes[position][0]] = error
    applied = [(index, query) for index, query in writes if results[index] is None]
    if outcome.matched == len(applied):
        for index, _ in applied:
            results[index] = (batch[index].target, True)
    else:
        # Some were refused: their documents say which, and why.
        docs = await _documents([query for _, query in applied])
        at_target = []
        for index, query in applied:
            refusal = _refusal(batch[index], docs.get((query["taskId"], query["executionId"])))
            results[index] = refusal
            if refusal == (batch[index].target, False):
                at_target.append(index)
        if len(at_target) == outcome.matched:
            for index in at_target:
                results[index] = (batch[index].target, True)
    return [result for result in results if result is not None]


async def _query(change: Transition) -> dict[str, Any] | TrackerError:
    """The transition's filter: the execution (by task, the shard key, looked up when not
    given) in a status the target may be entered from, under the claim token if any."""
    target = change.target
    if target not in ENTERED_AT:
        return InvalidTransitionError(change.execution_id, TaskStatus.QUEUED, target)
    task_id = change.task_id or await _task_of(change.execution_id)
    if task_id is None:
        return TaskNotFoundError(change.execution_id)
    query: dict[str, Any] = {
        "taskId": task_id,
        "executionId": change.execution_id,
        "status": {"$in": list(_statuses_entering(target))},
    }
    if change.claim_token is not None:
        query["claimToken"] = change.claim_token
    return query


@functools.cache  # every outcome's filter asks
def _statuses_entering(target: TaskStatus) -> tuple[str, ...]:
    return tuple(sorted(status.value for status in sources(target)))


def _update(change: Transition) -> dict[str, Any]:
    """The update: the target status, its time and ``updatedAt``, one more history entry
    (the last ``HISTORY_LIMIT`` kept), ``fields``. Times are the server's as this process
    estimates it: no lease or deadline is written here."""
    target = change.target
    now = connection.server_clock().estimate()
    fields = dict(change.fields or {})
    if _OWN_FIELDS & fields.keys() or any(name.startswith("$") for name in fields):
        raise ValueError(f"a transition cannot set {sorted(fields)}")
    removed = [name for name, value in fields.items() if value is None]
    if not target.is_active:
        # Leaving the active states frees the task for its next execution.
        removed += ["activeKey", "leaseExpiresAt"]
    update: dict[str, Any] = {
        "$set": {
            **{name: value for name, value in fields.items() if value is not None},
            "status": target.value,
            ENTERED_AT[target]: now,
            "updatedAt": now,
        },
        "$push": {
            "history": {
                "$each": [history_entry(target, now, change.message, change.worker)],
                "$slice": -HISTORY_LIMIT,
            }
        },
    }
    if removed:
        update["$unset"] = dict.fromkeys(removed, "")
    return update


async def _task_of(execution_id: str) -> str | None:
    """The task of an execution known by its id alone (a read across shards: callers that
    know the task pass it)."""
    doc = await connection.collection().find_one(
        {"executionId": execution_id}, projection={"taskId": 1}
    )
    return None if doc is None else str(doc["taskId"])


_EXPLAIN_PROJECTION = {"taskId": 1, "executionId": 1, "status": 1, "claimToken": 1}


async def _documents(
    queries: Sequence[dict[str, Any]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """The status and claim of the executions ``queries`` name, read in one query by task
    (the shard key) and execution id."""
    cursor = connection.collection().find(
        {
            "taskId": {"$in": sorted({query["taskId"] for query in queries})},
            "executionId": {"$in": sorted({query["executionId"] for query in queries})},
        },
        projection=_EXPLAIN_PROJECTION,
    )
    return {(doc["taskId"], doc["executionId"]): doc async for doc in cursor}


def _refusal(change: Transition, doc: dict[str, Any] | None) -> TransitionResult | TrackerError:
    """Why ``change`` matched nothing, from its execution's document: it was already at the
    target (``(target, False)``), or the error that says why it may not be."""
    if doc is None:
        return TaskNotFoundError(change.execution_id)
    current = TaskStatus(doc["status"])
    if change.claim_token is not None:
        holds_claim = doc.get("claimToken") == change.claim_token
        if holds_claim and current is change.target:
            return current, False
        if not holds_claim or current is not TaskStatus.PROCESSING:
            return StaleClaimError(change.execution_id, current)
    if current is change.target:
        return current, False
    return InvalidTransitionError(change.execution_id, current, change.target)
