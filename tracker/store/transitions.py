"""The writes that apply the transition table (``tracker.lifecycle``).

Every transition is one conditional update on the execution's current status (and claim
token, when the caller holds one). It appends to ``history`` and sets ``updatedAt`` in the
same write and returns ``(new_status, changed_by_this_call)``, as the query state machine's
``trigger_event`` does. A change the table forbids raises; nothing is ever overwritten.

``apply`` takes a batch of transitions, each with its own filter and its own result, so that
callers do not change when several deliveries' outcomes are written together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracker.clock import utcnow
from tracker.constants import HISTORY_LIMIT
from tracker.errors import (
    InvalidTransitionError,
    StaleClaimError,
    TaskNotFoundError,
    TrackerError,
)
from tracker.lifecycle import ENTERED_AT, TaskStatus, sources
from tracker.store import connection

TransitionResult = tuple[TaskStatus, bool]


@dataclass(frozen=True)
class Transition:
    """One status change: ``fields`` (stored names) are written in the same update."""

    execution_id: str
    target: TaskStatus
    claim_token: str | None = None
    message: str = ""
    worker: str | None = None
    fields: Mapping[str, Any] | None = None


def history_entry(
    status: TaskStatus, at: datetime, message: str = "", worker: str | None = None
) -> dict[str, Any]:
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
) -> TransitionResult:
    """Move ``execution_id`` to ``target`` if the table allows it from its current status.

    ``fields`` are stored (camelCase names) in the same write. Returns ``(target, True)`` when
    this call made the change and ``(target, False)`` when the execution was already there.
    Raises ``StaleClaimError`` when ``claim_token`` no longer holds the execution,
    ``InvalidTransitionError`` when the table forbids the change, ``TaskNotFoundError``.
    """
    [result] = await apply([Transition(execution_id, target, claim_token, message, worker, fields)])
    if isinstance(result, TrackerError):
        raise result
    return result


async def _apply_one(change: Transition) -> TransitionResult | TrackerError:
    target = change.target
    if target not in ENTERED_AT:
        return InvalidTransitionError(change.execution_id, TaskStatus.QUEUED, target)
    now = utcnow()
    query: dict[str, Any] = {
        "executionId": change.execution_id,
        "status": {"$in": sorted(status.value for status in sources(target))},
    }
    if change.claim_token is not None:
        query["claimToken"] = change.claim_token
    update: dict[str, Any] = {
        "$set": {
            **(change.fields or {}),
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
    if not target.is_active:
        # Leaving the active states frees the task for its next execution.
        update["$unset"] = {"activeKey": "", "leaseExpiresAt": ""}
    result = await connection.collection().update_one(query, update)
    if result.matched_count == 1:
        return target, True
    return await _explain_refusal(change)


async def _explain_refusal(change: Transition) -> TransitionResult | TrackerError:
    doc = await connection.collection().find_one(
        {"executionId": change.execution_id}, projection={"status": 1, "claimToken": 1}
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
