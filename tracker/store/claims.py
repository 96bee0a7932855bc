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
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument

from tracker.constants import DEFAULT_TIMEOUT_SECONDS, HISTORY_LIMIT
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.transitions import history_entry
from tracker.validation import check_id, check_optional_id

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

    def __post_init__(self) -> None:
        # The worker id goes into an update pipeline, where "$..." would read as a path.
        if self.worker.startswith("$"):
            raise ValueError(f"a worker id must not start with '$': {self.worker!r}")

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
    task_id: str | None = None,
) -> Claim:
    """Claim ``execution_id`` for processing (queued -> processing) in one write.

    The write is a pipeline update so that a refused claim costs the same one round trip and
    still returns the document, which tells a duplicate delivery apart from a missing record.
    """
    check_id(execution_id, "execution_id")
    check_id(worker, "worker")
    check_optional_id(task_id, "task_id")
    [result] = await claim_many(
        [ClaimRequest(execution_id, worker, lease, timeout, default_max_retries, task_id)]
    )
    return result


# What a claim returns: the fields the delivery needs, not the payload (it is in the
# message) nor the result or stack; the last two history entries tell a take-over.
CLAIM_PROJECTION: dict[str, Any] = {
    "payload": 0,
    "result": 0,
    "errorStack": 0,
    "rawBody": 0,
    "history": {"$slice": -2},
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def lease_over(now: Any, default_timeout: float) -> dict[str, Any]:
    """Whether a processing execution's claim may be taken over at ``now``: its lease has
    run out, or it has none (a Node service's document written without the plugin) and its
    timeout (its own, else ``default_timeout``) has passed since it started."""
    without_lease = {
        "$gte": [
            {"$subtract": [now, {"$ifNull": ["$processingStartedAt", EPOCH]}]},
            {"$multiply": [{"$ifNull": ["$timeoutSeconds", default_timeout]}, 1000]},
        ]
    }
    return {
        "$cond": [
            {"$gt": ["$leaseExpiresAt", None]},
            {"$lte": ["$leaseExpiresAt", now]},
            without_lease,
        ]
    }


async def _claim_one(request: ClaimRequest) -> Claim:
    clock = connection.server_clock()
    now = clock.now()
    token = str(uuid.uuid4())
    timeout = DEFAULT_TIMEOUT_SECONDS if request.timeout is None else request.timeout
    claimable = {
        "$or": [
            {"$eq": ["$status", Q.value]},
            {"$and": [{"$eq": ["$status", P.value]}, lease_over(now, timeout)]},
        ]
    }
    entry = history_entry(P, now, "claimed", request.worker)
    claimed_fields: dict[str, Any] = {
        "status": P.value,
        "claimToken": token,
        "claimedBy": request.worker,
        "processingStartedAt": now,
        "leaseExpiresAt": clock.later(now, request.lease),
        "updatedAt": now,
        "history": {
            "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, [entry]]}, -HISTORY_LIMIT]
        },
    }
    if request.timeout is not None:
        claimed_fields["timeoutSeconds"] = request.timeout
        claimed_fields["timeoutAt"] = clock.later(now, request.timeout)
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
    query = await _routed(request)
    if query is None:
        return Claim(execution=None, token=None)
    doc = await connection.collection().find_one_and_update(
        query, pipeline, projection=CLAIM_PROJECTION, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        return Claim(execution=None, token=None, foreign=await _exists_elsewhere(request))
    execution = TaskTracker.model_validate(doc)
    return Claim(execution=execution, token=token if execution.claim_token == token else None)


async def _routed(request: ClaimRequest) -> dict[str, Any] | None:
    """The claim's filter with the task in it (the shard key): looked up when the caller
    did not fence the claim by task; None when no such execution exists."""
    query = request.filter()
    if "taskId" not in query:
        found = await connection.collection().find_one(
            {"executionId": request.execution_id}, projection={"taskId": 1}
        )
        if found is None:
            return None
        query["taskId"] = found["taskId"]
    return query


async def _exists_elsewhere(request: ClaimRequest) -> bool:
    """Whether the execution id exists outside the claim's fence (only asked when the fenced
    claim found nothing: a first sighting, or a delivery naming another task's execution)."""
    if request.task_id is None and request.queue is None:
        return False
    found = await connection.collection().find_one(
        {"executionId": request.execution_id}, projection={"_id": 1}
    )
    return found is not None


async def renew_lease(
    execution_id: str, claim_token: str, lease: float, *, task_id: str | None = None
) -> bool:
    """Extend the holder's lease (on the server's clock); False when the claim is lost."""
    return await _set_lease(execution_id, claim_token, lease, task_id)


async def release_claim(execution_id: str, claim_token: str, *, task_id: str | None = None) -> bool:
    """Expire the holder's lease now, so the next delivery takes the execution over at once
    (used when a worker stops with the handler unfinished)."""
    return await _set_lease(execution_id, claim_token, 0.0, task_id)


async def _set_lease(
    execution_id: str, claim_token: str, lease: float, task_id: str | None
) -> bool:
    check_id(execution_id, "execution_id")
    check_id(claim_token, "claim_token")
    check_optional_id(task_id, "task_id")
    query = await _routed(ClaimRequest(execution_id, "-", 0.0, task_id=task_id))
    if query is None:
        return False
    clock = connection.server_clock()
    now = clock.now()
    ends = now if lease <= 0 else clock.later(now, lease)
    result = await connection.collection().update_one(
        {**query, "claimToken": claim_token, "status": P.value},
        [{"$set": {"leaseExpiresAt": ends, "updatedAt": now}}],
    )
    return result.matched_count == 1
