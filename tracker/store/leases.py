"""A claim's lease: renewed by its holder while the handler runs, released when the holder
stops with the handler unfinished. Both are fenced by the claim token and timed on the
server's clock."""

from __future__ import annotations

from tracker.lifecycle import TaskStatus
from tracker.store import connection
from tracker.store.claims import ClaimRequest, routed
from tracker.validation import check_id, check_optional_id


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
    query = await routed(ClaimRequest(execution_id, "-", 0.0, task_id=task_id))
    if query is None:
        return False
    clock = connection.server_clock()
    now = clock.now()
    ends = now if lease <= 0 else clock.later(now, lease)
    result = await connection.collection().update_one(
        {**query, "claimToken": claim_token, "status": TaskStatus.PROCESSING.value},
        [{"$set": {"leaseExpiresAt": ends, "updatedAt": now}}],
    )
    return result.matched_count == 1
