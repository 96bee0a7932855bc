"""One unordered bulk write whose errors are told apart per operation.

A write error refuses its own operation only: the others are applied, and the error comes
back as a ``WriteError`` at the operation's index, classified like any other store error. An
error of the whole command (MongoDB unreachable, a write concern not met) is raised: none of
the writes is known to be durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, WriteConcernError, WriteError

from tracker.store import connection


@dataclass(frozen=True)
class BulkOutcome:
    """``matched``: how many operations matched a document; ``errors``: the operations that
    failed, by index; ``upserted``: the ``_id`` of each document an upsert inserted (by
    value: the in-memory store numbers upserts wrongly in a batch)."""

    matched: int
    errors: dict[int, WriteError] = field(default_factory=dict)
    upserted: frozenset[Any] = frozenset()


async def update_each(operations: Sequence[UpdateOne]) -> BulkOutcome:
    """Apply every update of ``operations`` in one round trip, unordered."""
    try:
        result = await connection.collection().bulk_write(list(operations), ordered=False)
    except BulkWriteError as failure:
        details: Any = failure.details
        concern = details.get("writeConcernErrors") or []
        if concern:
            first = concern[0]
            raise WriteConcernError(first.get("errmsg", ""), first.get("code"), first) from failure
        errors = {
            int(error["index"]): WriteError(error.get("errmsg", ""), error.get("code"), error)
            for error in details.get("writeErrors", [])
        }
        upserted = frozenset(item["_id"] for item in details.get("upserted", []))
        return BulkOutcome(int(details.get("nMatched", 0)), errors, upserted)
    upserted_ids = (result.upserted_ids or {}).values()
    return BulkOutcome(result.matched_count, upserted=frozenset(upserted_ids))
