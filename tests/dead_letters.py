"""Dead letters for the operations tests, recorded the way a worker records them, and the
consumer's side of a replay: running a republished execution to success or failure."""

from __future__ import annotations

from tracker import TaskStatus, claim, create_execution, transition
from tracker.consumer import QueueRules
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.models import TaskTracker


async def dead_letter(
    task_id: str, queue: str = "reports", error: str = "partner timed out", payload: object = None
) -> TaskTracker:
    """A dead letter of ``task_id``: its attempt outlived its timeout with no retry left."""
    created = await create_execution(task_id, queue, payload or {"task": task_id}, max_retries=0)
    return await fail(created.execution.execution_id, error)


async def fail(execution_id: str, error: str = "partner timed out") -> TaskTracker:
    """Claim ``execution_id`` and fail it for good (its retry budget is spent)."""
    found = await TaskTracker.find_execution(execution_id)
    assert found is not None
    won = await claim(execution_id, worker="w", lease=60)
    rules = QueueRules(queue=found.queue_name, timeout=60, max_retries=0, timeout_message=error)
    decision = await Outcomes(rules, "w").expire(execution_id, won.token)
    assert decision is not None
    assert decision.outcome == "dead_lettered", decision
    done = await TaskTracker.find_execution(execution_id)
    assert done is not None
    return done


async def complete(execution_id: str) -> None:
    won = await claim(execution_id, worker="w", lease=60)
    await transition(execution_id, TaskStatus.COMPLETED, claim_token=won.token)


class Recorder:
    """A publish function that keeps what it published (only once the publish returned)."""

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    async def __call__(self, message: OutgoingMessage) -> None:
        self.messages.append(message)

    @property
    def execution_ids(self) -> list[str]:
        return [m.message_id for m in self.messages]
