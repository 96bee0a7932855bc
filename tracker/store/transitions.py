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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracker.constants import HISTORY_LIMIT
from tracker.errors import (
    InvalidTransitionError,
    StaleClaimError,
    TaskNotFoundError,
    TrackerError,
)
from tracker.lifecycle import ENTERED_AT, TaskStatus, sources
from tracker.store import connection
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


async def apply(batch: Sequence[Transition]) -> list[TransitionResult | TrackerError]:
    """Apply each transition of ``batch``; each result is ``(target, changed)`` or the error
    that explains a refusal (``StaleClaimError``, ``InvalidTransitionError``,
    ``TaskNotFoundError``). Errors of the store itself propagate."""
    return [await _apply_one(change) for change in batch]


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
    if isinstance(result, TrackerError):
        raise result
    return result


async def _apply_one(change: Transition) -> TransitionResult | TrackerError:
    target = change.target
    if target not in ENTERED_AT:
        return InvalidTransitionError(change.execution_id, TaskStatus.QUEUED, target)
    task_id = change.task_id or await _task_of(change.execution_id)
    if task_id is None:
        return TaskNotFoundError(change.execution_id)
    query: dict[str, Any] = {
        "taskId": task_id,
        "executionId": change.execution_id,
        "status": {"$in": sorted(status.value for status in sources(target))},
    }
    if change.claim_token is not None:
        query["claimToken"] = change.claim_token
    result = await connection.collection().update_one(query, _update(change))
    if result.matched_count == 1:
        return target, True
    return await _explain_refusal(change, task_id)


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


async def _explain_refusal(change: Transition, task_id: str) -> TransitionResult | TrackerError:
    doc = await connection.collection().find_one(
        {"taskId": task_id, "executionId": change.execution_id},
        projection={"status": 1, "claimToken": 1},
    )
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
