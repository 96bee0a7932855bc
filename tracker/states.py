"""The transition table, the single source of truth for status changes, and the atomic
writes that apply it.

Every transition is one conditional update on the execution's current status (and claim
token, when the caller holds one). It appends to ``history`` and sets ``updatedAt`` in the
same write and returns ``(new_status, changed_by_this_call)``, as seed 002's
``trigger_event`` does. A change the table forbids raises; nothing is ever overwritten.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from pymongo import ReturnDocument

from tracker import db
from tracker.clock import utcnow
from tracker.constants import HISTORY_LIMIT
from tracker.errors import InvalidTransitionError, StaleClaimError, TaskNotFoundError
from tracker.models import TaskStatus, TaskTracker

Q, P, C, F, D, A = (
    TaskStatus.QUEUED,
    TaskStatus.PROCESSING,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.DLQ,
    TaskStatus.ARCHIVED,
)

TRANSITIONS: Final[Mapping[TaskStatus, frozenset[TaskStatus]]] = MappingProxyType(
    {
        Q: frozenset({P}),
        # failed: this attempt failed and a retry follows as a new execution
        P: frozenset({C, F, D}),
        D: frozenset({A}),
        C: frozenset(),
        F: frozenset(),
        A: frozenset(),
    }
)

# Statuses an execution may be created in: queued by a publisher; processing when a message
# with no record is tracked on arrival; dlq when such a message is rejected on arrival.
INITIAL_STATUSES: Final = frozenset({Q, P, D})

# The timestamp field each status sets when entered.
_ENTERED_AT: Final[Mapping[TaskStatus, str]] = MappingProxyType(
    {P: "processingStartedAt", C: "completedAt", F: "failedAt", D: "failedAt", A: "archivedAt"}
)


def sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses from which ``target`` may be entered."""
    return frozenset(status for status, targets in TRANSITIONS.items() if target in targets)


def history_entry(
    status: TaskStatus, at: datetime, message: str = "", worker: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": status.value, "at": at, "message": message}
    if worker is not None:
        entry["worker"] = worker
    return entry


async def transition(
    execution_id: str,
    target: TaskStatus,
    *,
    claim_token: str | None = None,
    message: str = "",
    worker: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> tuple[TaskStatus, bool]:
    """Move ``execution_id`` to ``target`` if the table allows it from its current status.

    ``fields`` are stored (camelCase names) in the same write. Returns ``(target, True)`` when
    this call made the change and ``(target, False)`` when the execution was already there.
    Raises ``StaleClaimError`` when ``claim_token`` no longer holds the execution,
    ``InvalidTransitionError`` when the table forbids the change, ``TaskNotFoundError``.
    """
    if target not in _ENTERED_AT:
        raise InvalidTransitionError(execution_id, Q, target)
    now = utcnow()
    query: dict[str, Any] = {
        "executionId": execution_id,
        "status": {"$in": sorted(status.value for status in sources(target))},
    }
    if claim_token is not None:
        query["claimToken"] = claim_token
    update: dict[str, Any] = {
        "$set": {
            **(fields or {}),
            "status": target.value,
            _ENTERED_AT[target]: now,
            "updatedAt": now,
        },
        "$push": {
            "history": {
                "$each": [history_entry(target, now, message, worker)],
                "$slice": -HISTORY_LIMIT,
            }
        },
    }
    if not target.is_active:
        # Leaving the active states frees the task for its next execution.
        update["$unset"] = {"activeKey": "", "leaseExpiresAt": ""}
    result = await db.collection().update_one(query, update)
    if result.matched_count == 1:
        return target, True
    return await _explain_refusal(execution_id, target, claim_token)


async def _explain_refusal(
    execution_id: str, target: TaskStatus, claim_token: str | None
) -> tuple[TaskStatus, bool]:
    doc = await db.collection().find_one(
        {"executionId": execution_id}, projection={"status": 1, "claimToken": 1}
    )
    if doc is None:
        raise TaskNotFoundError(execution_id)
    current = TaskStatus(doc["status"])
    if claim_token is not None:
        holds_claim = doc.get("claimToken") == claim_token
        if holds_claim and current is target:
            return current, False
        if not holds_claim or current is not P:
            raise StaleClaimError(execution_id, current)
    if current is target:
        return current, False
    raise InvalidTransitionError(execution_id, current, target)


@dataclass(frozen=True)
class Claim:
    """The result of a claim attempt: ``execution`` is the document after the attempt (None
    when no record exists); ``token`` is set only when this call won the claim."""

    execution: TaskTracker | None
    token: str | None

    @property
    def won(self) -> bool:
        return self.token is not None

    @property
    def taken_over(self) -> bool:
        """The claim replaced another worker's whose lease had expired."""
        history = self.execution.history if self.execution else []
        return self.won and len(history) >= 2 and history[-2].status is P


async def claim(
    execution_id: str,
    *,
    worker: str,
    lease: float,
    timeout: float | None = None,
    default_max_retries: int | None = None,
) -> Claim:
    """Claim ``execution_id`` for processing (queued -> processing) in one write.

    An execution still processing under a lease that has expired is taken over: its holder
    is presumed dead, and its late outcome will be refused by the claim token. The write is a
    pipeline update so that a refused claim costs the same one round trip and still returns
    the document, which tells a duplicate delivery apart from a missing record.
    """
    now = utcnow()
    token = str(uuid.uuid4())
    lease_until = now + timedelta(seconds=lease)
    claimable = {
        "$or": [
            {"$eq": ["$status", Q.value]},
            {
                "$and": [
                    {"$eq": ["$status", P.value]},
                    {"$lte": [{"$ifNull": ["$leaseExpiresAt", now]}, now]},
                ]
            },
        ]
    }
    entry = history_entry(P, now, "claimed", worker)
    claimed_fields: dict[str, Any] = {
        "status": P.value,
        "claimToken": token,
        "claimedBy": worker,
        "processingStartedAt": now,
        "leaseExpiresAt": lease_until,
        "updatedAt": now,
        "history": {
            "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, [entry]]}, -HISTORY_LIMIT]
        },
    }
    if timeout is not None:
        claimed_fields["timeoutSeconds"] = timeout
    if default_max_retries is not None:
        claimed_fields["maxRetries"] = {"$ifNull": ["$maxRetries", default_max_retries]}
    pipeline: list[dict[str, Any]] = [
        {"$set": {"_claimable": claimable}},
        {
            "$set": {
                name: {"$cond": ["$_claimable", value, f"${name}"]}
                for name, value in claimed_fields.items()
            }
        },
        # mongomock implements no $unset stage; an exclusion $project is the same on a server.
        {"$project": {"_claimable": 0}},
    ]
    doc = await db.collection().find_one_and_update(
        {"executionId": execution_id}, pipeline, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        return Claim(execution=None, token=None)
    execution = TaskTracker.model_validate(doc)
    return Claim(execution=execution, token=token if execution.claim_token == token else None)


async def renew_lease(execution_id: str, claim_token: str, lease: float) -> bool:
    """Extend the holder's lease; False when the claim has been lost."""
    now = utcnow()
    result = await db.collection().update_one(
        {"executionId": execution_id, "claimToken": claim_token, "status": P.value},
        {"$set": {"leaseExpiresAt": now + timedelta(seconds=lease), "updatedAt": now}},
    )
    return result.matched_count == 1


async def release_claim(execution_id: str, claim_token: str) -> bool:
    """Expire the holder's lease now, so the next delivery takes the execution over at once
    (used when a worker stops with the handler unfinished)."""
    now = utcnow()
    result = await db.collection().update_one(
        {"executionId": execution_id, "claimToken": claim_token, "status": P.value},
        {"$set": {"leaseExpiresAt": now, "updatedAt": now}},
    )
    return result.matched_count == 1
