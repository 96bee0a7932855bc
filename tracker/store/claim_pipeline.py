"""The update pipeline of a claim: one conditional write that takes a queued execution, or
a processing one whose holder's lease ran out, and leaves any other as it is.

Times are the server's (``$$NOW``), so that a worker's skewed clock neither steals live
claims nor keeps dead ones; on the in-memory MongoDB they are this process's.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from tracker.constants import DEFAULT_TIMEOUT_SECONDS, HISTORY_LIMIT
from tracker.lifecycle import TaskStatus
from tracker.store import connection
from tracker.store.clock import NOW
from tracker.store.transitions import history_entry

P, Q = TaskStatus.PROCESSING, TaskStatus.QUEUED

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


def claim_pipeline(
    token: str,
    worker: str,
    lease: float,
    timeout: float | None,
    default_max_retries: int | None,
) -> list[dict[str, Any]]:
    """The pipeline that claims the execution for ``token`` (by ``worker``, with ``lease``
    seconds, ``timeout`` and ``default_max_retries`` recorded) when it is claimable, and
    leaves it as it is otherwise (so a refused claim still matches, and can be read back)."""
    claimable, claimed_fields = _template(worker, lease, timeout, default_max_retries)
    fields = {
        name: {"$cond": ["$_claimable", value, f"${name}"]}
        for name, value in claimed_fields.items()
    }
    fields["claimToken"] = {"$cond": ["$_claimable", token, "$claimToken"]}
    return [
        {"$set": {"_claimable": claimable}},
        {"$set": fields},
        # mongomock implements no $unset stage; an exclusion $project is the same on a server.
        {"$project": {"_claimable": 0}},
    ]


def claim_write(
    token: str,
    worker: str,
    lease: float,
    timeout: float | None,
    default_max_retries: int | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same claim as a condition for the filter and a plain update: the write changes
    only a claimable execution and leaves any other unmatched. Half the size of
    ``claim_pipeline`` and no condition per field, for a batch of claims whose documents are
    read back afterwards anyway."""
    if not connection.server_clock().in_memory:
        encoded = _encoded_claim(worker, lease, timeout, default_max_retries)
        return {"$expr": encoded.claimable}, [{"$set": encoded.fields(token)}]
    claimable, claimed_fields = _template(worker, lease, timeout, default_max_retries)
    return {"$expr": claimable}, [{"$set": {**claimed_fields, "claimToken": token}}]


_INT32 = struct.Struct("<i")


@dataclass(frozen=True)
class _EncodedClaim:
    """A server's claim write, encoded as BSON once: every claim of a consumer sends the same
    bytes but for its token, and encoding the expressions anew took two thirds of the
    claim's encoding time. The bytes are those of the dictionaries ``claim_write`` builds
    for the in-memory store."""

    claimable: RawBSONDocument
    before_token: bytes
    after_token: bytes

    def fields(self, token: str) -> RawBSONDocument:
        text = token.encode()
        element = b"\x02claimToken\x00" + _INT32.pack(len(text) + 1) + text + b"\x00"
        size = 4 + len(self.before_token) + len(element) + len(self.after_token) + 1
        return RawBSONDocument(
            _INT32.pack(size) + self.before_token + element + self.after_token + b"\x00"
        )


# Typed: 30 and 30.0 are stored as an int and a double, as the caller gave them.
@functools.lru_cache(maxsize=64, typed=True)
def _encoded_claim(
    worker: str, lease: float, timeout: float | None, default_max_retries: int | None
) -> _EncodedClaim:
    claimable, claimed_fields = _claim_template(worker, lease, timeout, default_max_retries, NOW)
    names = list(claimed_fields)
    split = names.index("claimToken")
    before = {name: claimed_fields[name] for name in names[:split]}
    after = {name: claimed_fields[name] for name in names[split + 1 :]}
    return _EncodedClaim(
        claimable=RawBSONDocument(bson.encode(claimable)),
        before_token=_elements(before),
        after_token=_elements(after),
    )


def _elements(fields: dict[str, Any]) -> bytes:
    """The BSON elements of ``fields``, without the document's length and terminator."""
    return bson.encode(fields)[4:-1]


def _template(
    worker: str, lease: float, timeout: float | None, default_max_retries: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    now = connection.server_clock().now()
    # On a server, ``now`` is "$$NOW": the claim is the same for every delivery of a
    # consumer but for its token, so it is built once.
    template = _claim_template if isinstance(now, str) else _build_claim_template
    return template(worker, lease, timeout, default_max_retries, now)


def _build_claim_template(
    worker: str, lease: float, timeout: float | None, default_max_retries: int | None, now: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Whether the execution is claimable (an expression), and the fields a claim sets
    (``claimToken`` is each claim's own)."""
    clock = connection.server_clock()
    claimable = {
        "$or": [
            {"$eq": ["$status", Q.value]},
            {
                "$and": [
                    {"$eq": ["$status", P.value]},
                    lease_over(now, DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout),
                ]
            },
        ]
    }
    entry = history_entry(P, now, "claimed", worker)
    claimed_fields: dict[str, Any] = {
        "status": P.value,
        "claimToken": None,
        "claimedBy": worker,
        "processingStartedAt": now,
        "leaseExpiresAt": clock.later(now, lease),
        "updatedAt": now,
        "history": {
            "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, [entry]]}, -HISTORY_LIMIT]
        },
    }
    if timeout is not None:
        claimed_fields["timeoutSeconds"] = timeout
        claimed_fields["timeoutAt"] = clock.later(now, timeout)
    if default_max_retries is not None:
        claimed_fields["maxRetries"] = {"$ifNull": ["$maxRetries", default_max_retries]}
    return claimable, claimed_fields


_claim_template = functools.lru_cache(maxsize=64, typed=True)(_build_claim_template)
