"""Drive executions into a given status through the real transitions, for tests."""

from __future__ import annotations

import uuid

from tracker import TaskStatus, TaskTracker, claim, create_execution, transition


async def execution_in(
    status: TaskStatus, *, queue: str = "reports", task_id: str | None = None
) -> tuple[TaskTracker, str | None]:
    """A new execution in ``status`` and the claim token that put it there (if any)."""
    task_id = task_id or f"{queue}:{uuid.uuid4().hex[:8]}"
    created = await create_execution(task_id, queue, {"n": 1})
    execution_id = created.execution.execution_id
    if status is TaskStatus.QUEUED:
        return created.execution, None
    won = await claim(execution_id, worker="test-worker", lease=60)
    token = won.token
    if status is TaskStatus.ARCHIVED:
        await transition(execution_id, TaskStatus.DLQ, claim_token=token)
        await transition(execution_id, TaskStatus.ARCHIVED, fields={"archivedBy": "test"})
    elif status is not TaskStatus.PROCESSING:
        await transition(execution_id, status, claim_token=token)
    execution = await TaskTracker.find_execution(execution_id)
    assert execution is not None
    assert execution.status is status
    return execution, token
