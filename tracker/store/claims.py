"""Claims: the write that moves an execution from queued to processing under a claim token
and a lease, and the lease's renewal and release.

The token fences every later outcome: only its holder can finish the execution. A claim
whose lease has expired can be taken over; its holder is presumed dead, and its late outcome
is refused by the token.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ReturnDocument

from tracker.clock import utcnow
from tracker.constants import HISTORY_LIMIT
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.transitions import history_entry

P, Q = TaskStatus.PROCESSING, TaskStatus.QUEUED


@dataclass(frozen=True)
class ClaimRequest:
    """Claim ``execution_id`` for ``worker`` with a ``lease`` (seconds). ``timeout`` and
    ``default_max_retries`` are recorded with the claim (the latter only when unset).

    ``task_id`` and ``queue`` fence the claim: it applies only to the execution of that task
    in that queue. An execution id that exists under another task or queue is ``foreign``:
    a delivery naming it is not that execution's."""

    execution_id: str
    worker: str
    lease: float
    timeout: float | None = None
    default_max_retries: int | None = None
    task_id: str | None = None
    queue: str | None = None

    def filter(self) -> dict[str, Any]:
        query: dict[str, Any] = {"executionId": self.execution_id}
        if self.task_id is not None:
            query["taskId"] = self.task_id
        if self.queue is not None:
            query["queueName"] = self.queue
        return query


@dataclass(frozen=True)
class Claim:
    """The result of a claim attempt: ``execution`` is the document after the attempt (None
    when no record exists); ``token`` is set only when this call won the claim."""

    execution: TaskTracker | None
    token: str | None
    foreign: bool = False

    @property
    def won(self) -> bool:
        return self.token is not None

    @property
    def taken_over(self) -> bool:
        """The claim replaced another worker's whose lease had expired."""
        history = self.execution.history if self.execution else []
        return self.won and len(history) >= 2 and history[-2].status is P


async def claim_many(batch: Sequence[ClaimRequest]) -> list[Claim]:
    """Attempt every claim of ``batch``; one result each, in order."""
    return [await _claim_one(request) for request in batch]


async def claim(
    execution_id: str,
    *,
    worker: str,
    lease: float,
    timeout: float | None = None,
    default_max_retries: int | None = None,
) -> Claim:
    """Claim ``execution_id`` for processing (queued -> processing) in one write.

    The write is a pipeline update so that a refused claim costs the same one round trip and
    still returns the document, which tells a duplicate delivery apart from a missing record.
    """
    [result] = await claim_many(
        [ClaimRequest(execution_id, worker, lease, timeout, default_max_retries)]
    )
    return result


async def _claim_one(request: ClaimRequest) -> Claim:
    now = utcnow()
    token = str(uuid.uuid4())
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
    entry = history_entry(P, now, "claimed", request.worker)
    claimed_fields: dict[str, Any] = {
        "status": P.value,
        "claimToken": token,
        "claimedBy": request.worker,
        "processingStartedAt": now,
        "leaseExpiresAt": now + timedelta(seconds=request.lease),
        "updatedAt": now,
        "history": {
            "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, [entry]]}, -HISTORY_LIMIT]
        },
    }
    if request.timeout is not None:
        claimed_fields["timeoutSeconds"] = request.timeout
    if request.default_max_retries is not None:
        claimed_fields["maxRetries"] = {"$ifNull": ["$maxRetries", request.default_max_retries]}
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
    doc = await connection.collection().find_one_and_update(
        request.filter(), pipeline, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        return Claim(execution=None, token=None, foreign=await _exists_elsewhere(request))
    execution = TaskTracker.model_validate(doc)
    return Claim(execution=execution, token=token if execution.claim_token == token else None)


async def _exists_elsewhere(request: ClaimRequest) -> bool:
    """Whether the execution id exists outside the claim's fence (only asked when the fenced
    claim found nothing: a first sighting, or a delivery naming another task's execution)."""
    if request.task_id is None and request.queue is None:
        return False
    found = await connection.collection().find_one(
        {"executionId": request.execution_id}, projection={"_id": 1}
    )
    return found is not None


async def renew_lease(execution_id: str, claim_token: str, lease: float) -> bool:
    """Extend the holder's lease; False when the claim has been lost."""
    now = utcnow()
    result = await connection.collection().update_one(
        {"executionId": execution_id, "claimToken": claim_token, "status": P.value},
        {"$set": {"leaseExpiresAt": now + timedelta(seconds=lease), "updatedAt": now}},
    )
    return result.matched_count == 1


async def release_claim(execution_id: str, claim_token: str) -> bool:
    """Expire the holder's lease now, so the next delivery takes the execution over at once
    (used when a worker stops with the handler unfinished)."""
    now = utcnow()
    result = await connection.collection().update_one(
        {"executionId": execution_id, "claimToken": claim_token, "status": P.value},
        {"$set": {"leaseExpiresAt": now, "updatedAt": now}},
    )
    return result.matched_count == 1
