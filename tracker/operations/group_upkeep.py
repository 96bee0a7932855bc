"""What keeps failure groups useful beyond single actions: the counts and the alerting
groups the metrics collector reads, and giving a group to dead letters recorded before
groups existed (``tracker migrate``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from tracker.lifecycle import TaskStatus
from tracker.operations.groups import (
    STATES,
    FailureGroup,
    from_document,
    group_id,
    note_dead_letter,
)
from tracker.store import connection
from tracker.store.operator_records import GROUPS

# A group first seen within this long is new (the alert on new groups).
NEW_WINDOW_SECONDS: Final = 3600.0
# The alert names each group; this many at most, the most recent first.
MAX_ALERTING: Final = 50
BACKFILL_BATCH: Final = 1000


async def state_counts() -> dict[tuple[str, bool], int]:
    """Groups per (state, muted), every pair present."""
    groups = connection.database()[GROUPS]
    return {
        (state, muted): await groups.count_documents({"state": state, "muted": muted})
        for state in STATES
        for muted in (False, True)
    }


async def alerting(
    now: datetime, window: float = NEW_WINDOW_SECONDS, limit: int = MAX_ALERTING
) -> list[FailureGroup]:
    """The unmuted groups worth an alert: regressed ones, and open ones first seen within
    ``window`` seconds of ``now``; most recent first, at most ``limit``."""
    groups = connection.database()[GROUPS]
    regressed = (
        await groups.find(
            {"state": "regressed", "muted": False, "lastSeen": {"$lte": now}},
            sort=[("lastSeen", -1)],
        )
        .limit(limit)
        .to_list(limit)
    )
    since = now - timedelta(seconds=window)
    new = (
        await groups.find(
            {"state": "open", "muted": False, "firstSeen": {"$gte": since}},
            sort=[("firstSeen", -1)],
        )
        .limit(limit)
        .to_list(limit)
    )
    found = [from_document(doc) for doc in (*regressed, *new)]
    return sorted(found, key=lambda g: g.last_seen, reverse=True)[:limit]


async def backfill(batch: int = BACKFILL_BATCH) -> int:
    """Give up to ``batch`` dead letters without a ``groupId`` (recorded before groups
    existed, or by another writer) their group; how many were given one."""
    tasks = connection.collection()
    found = (
        await tasks.find(
            {"groupId": None, "status": TaskStatus.DLQ.value},
            projection={
                "taskId": 1,
                "executionId": 1,
                "queueName": 1,
                "errorCategory": 1,
                "errorType": 1,
                "errorMessage": 1,
                "failedAt": 1,
                "enqueuedAt": 1,
            },
        )
        .limit(batch)
        .to_list(batch)
    )
    given = 0
    for doc in found:
        cause = _cause(doc)
        gid = group_id(*cause)
        claimed = await tasks.update_one(
            {"_id": doc["_id"], "groupId": None, "status": TaskStatus.DLQ.value},
            {"$set": {"groupId": gid}},
        )
        if claimed.modified_count:
            at = doc.get("failedAt") or doc.get("enqueuedAt")
            await note_dead_letter(*cause, str(doc.get("executionId")), at)
            given += 1
    return given


def _cause(doc: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    return (
        str(doc.get("queueName")),
        doc.get("errorCategory"),
        doc.get("errorType"),
        doc.get("errorMessage"),
    )
