"""What was purged stays known (collection ``tracker_purged``): a purge deletes archived
executions for good, but a copy of one of their messages may still wait in a broker queue
(``Q.dlq``); ``tracker dlq import`` asks here before it records a message as a dead letter,
so it never brings back what an operator archived and purged.

An entry is the execution id (``_id``) and when it was purged, kept for
``OPERATIONS_RETENTION_SECONDS`` (TTL on ``expiresAt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pymongo import UpdateOne

from tracker.constants import OPERATIONS_RETENTION_SECONDS
from tracker.store import connection
from tracker.store.operator_records import PURGED


async def remember(execution_ids: Sequence[str]) -> None:
    """Note ``execution_ids`` as purged (before they are deleted: a purge that dies midway
    leaves notes of executions still there, never deleted ones without a note)."""
    if not execution_ids:
        return
    now = connection.server_clock().estimate()
    expires = now + timedelta(seconds=OPERATIONS_RETENTION_SECONDS)
    await _collection().bulk_write(
        [
            UpdateOne({"_id": eid}, {"$set": {"purgedAt": now, "expiresAt": expires}}, upsert=True)
            for eid in execution_ids
        ],
        ordered=False,
    )


async def was_purged(execution_id: str) -> bool:
    return await _collection().find_one({"_id": execution_id}, projection={"_id": 1}) is not None


def _collection() -> Any:
    return connection.database()[PURGED]
