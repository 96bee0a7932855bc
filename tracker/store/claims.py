"""Claims: the write that moves an execution from queued to processing under a claim token
and a lease (renewed and released in ``leases``).

The token fences every later outcome: only its holder can finish the execution. A claim
whose lease has expired can be taken over; its holder is presumed dead, and its late outcome
is refused by the token.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument, UpdateOne

from tracker.clock import random_uuid
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection
from tracker.store.bulk import update_each
from tracker.store.claim_pipeline import claim_pipeline, claim_write
from tracker.store.errors import is_store_error, is_transient
from tracker.validation import check_id, check_optional_id

P = TaskStatus.PROCESSING


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
    """The result of a claim attempt: ``document`` is the execution's stored document after
    the attempt (``CLAIM_PROJECTION`` of it; None when no record exists); ``token`` is set
    only when this call won the claim."""

    document: dict[str, Any] | None
    token: str | None
    foreign: bool = False

    @functools.cached_property
    def execution(self) -> TaskTracker | None:
        """The document as a model (validated on first use: a delivery rarely needs it)."""
        return None if self.document is None else TaskTracker.model_validate(self.document)

    @property
    def won(self) -> bool:
        return self.token is not None

    @property
    def status(self) -> TaskStatus | None:
        return None if self.document is None else TaskStatus(self.document["status"])

    @property
    def taken_over(self) -> bool:
        """The claim replaced another worker's whose lease had expired."""
        history = (self.document or {}).get("history") or []
        return self.won and len(history) >= 2 and history[-2].get("status") == P.value


async def claim_many(batch: Sequence[ClaimRequest]) -> list[Claim | Exception]:
    """Attempt every claim of ``batch``; one result each, in order: the claim, or the store
    error that refused that claim alone. An error of the whole batch is raised."""
    if len(batch) == 1:
        return [await _claim_one(batch[0])]
    try:
        return await _claim_batch(batch)
    except Exception as error:
        if is_transient(error) or not is_store_error(error):
            raise
        # The batch as a whole was refused (nothing of it applied): each claim alone finds
        # the one that cannot be made, and the others are made.
        return [await _alone(request) for request in batch]


async def _alone(request: ClaimRequest) -> Claim | Exception:
    try:
        return await _claim_one(request)
    except Exception as error:
        if is_transient(error) or not is_store_error(error):
            raise
        return error


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
    return await _claim_one(
        ClaimRequest(execution_id, worker, lease, timeout, default_max_retries, task_id)
    )


# What a claim returns: the fields the delivery needs, not the payload (it is in the
# message) nor the result or stack; the last two history entries tell a take-over.
CLAIM_PROJECTION: dict[str, Any] = {
    "payload": 0,
    "result": 0,
    "errorStack": 0,
    "rawBody": 0,
    "history": {"$slice": -2},
}


def _claim_pipeline(request: ClaimRequest, token: str) -> list[dict[str, Any]]:
    return claim_pipeline(
        token, request.worker, request.lease, request.timeout, request.default_max_retries
    )


async def _claim_one(request: ClaimRequest) -> Claim:
    """One claim in one round trip: the update returns the document."""
    query = await routed(request)
    if query is None:
        return Claim(document=None, token=None)
    token = random_uuid()
    doc = await connection.collection().find_one_and_update(
        query,
        _claim_pipeline(request, token),
        projection=CLAIM_PROJECTION,
        return_document=ReturnDocument.AFTER,
    )
    return await _claim_of(request, doc, token)


async def _claim_batch(batch: Sequence[ClaimRequest]) -> list[Claim | Exception]:
    """Several claims in two round trips: one unordered bulk write of one update per
    execution (each filtered by its task, so each goes to one shard, and by being claimable),
    then one read of the documents, in which each claim's own token says whether it won."""
    tokens = [random_uuid() for _ in batch]
    queries = [await routed(request) for request in batch]
    operations = []
    written: list[int] = []
    for index, (request, query, token) in enumerate(zip(batch, queries, tokens, strict=True)):
        if query is not None:
            condition, update = claim_write(
                token, request.worker, request.lease, request.timeout, request.default_max_retries
            )
            operations.append(UpdateOne({**query, **condition}, update))
            written.append(index)
    outcome = await update_each(operations)
    failed = {written[position]: error for position, error in outcome.errors.items()}
    documents = await _read_back([query for query in queries if query is not None])
    claims: list[Claim | Exception] = []
    for index, (request, query, token) in enumerate(zip(batch, queries, tokens, strict=True)):
        if index in failed:
            claims.append(failed[index])
        elif query is None:
            claims.append(Claim(document=None, token=None))
        else:
            doc = documents.get((query["taskId"], request.execution_id))
            claims.append(await _claim_of(request, _fenced(doc, query), token))
    return claims


async def _read_back(queries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The claimed executions' documents by task and execution id. The read names the tasks
    (the shard key), so it goes only to the shards that hold them."""
    if not queries:
        return {}
    cursor = connection.collection().find(
        {
            "taskId": {"$in": sorted({query["taskId"] for query in queries})},
            "executionId": {"$in": sorted({query["executionId"] for query in queries})},
        },
        projection=CLAIM_PROJECTION,
    )
    return {(doc["taskId"], doc["executionId"]): doc async for doc in cursor}


def _fenced(doc: dict[str, Any] | None, query: dict[str, Any]) -> dict[str, Any] | None:
    """``doc`` if it is inside the claim's fence (its queue, when the claim names one)."""
    if doc is None or ("queueName" in query and doc.get("queueName") != query["queueName"]):
        return None
    return doc


async def _claim_of(request: ClaimRequest, doc: dict[str, Any] | None, token: str) -> Claim:
    if doc is None:
        return Claim(document=None, token=None, foreign=await _exists_elsewhere(request))
    return Claim(document=doc, token=token if doc.get("claimToken") == token else None)


async def routed(request: ClaimRequest) -> dict[str, Any] | None:
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
