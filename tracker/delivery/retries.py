"""Retries: the next execution of a failed attempt, created under the id the failure
recorded (so never twice), its message into the delay queue of its tier, and recovery when
the attempt's holder died between recording the failure and publishing the retry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

from tracker.clock import utcnow
from tracker.constants import retry_queue_name
from tracker.consumer import QueueRules
from tracker.delivery.envelope import OutgoingMessage, encode_stored_payload, task_message
from tracker.errors import Retry
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store.creation import create_execution

log = structlog.get_logger("tracker.retries")


class Retries:
    """The retries of one queue, under its ``rules``."""

    def __init__(self, rules: QueueRules) -> None:
        self.rules = rules

    async def create(
        self, failed: TaskTracker, next_id: str, payload: Any, delay: float
    ) -> TaskTracker | None:
        """The next execution of a failed one, or None if the task already has another
        active execution (then that one carries the task on)."""
        created = await create_execution(
            failed.task_id,
            failed.queue_name,
            payload,
            execution_id=next_id,
            retry_count=failed.retry_count + 1,
            max_retries=failed.effective_max_retries(),
            metadata=failed.metadata,
            message_version=failed.message_version,
            history_message=f"retry of {failed.execution_id}",
            enqueued_at=utcnow() + timedelta(seconds=delay),
        )
        if created.deduplicated and created.execution.execution_id != next_id:
            return None
        return created.execution

    async def recover(self, failed: TaskTracker) -> tuple[OutgoingMessage, ...]:
        """The retry of a failed execution whose holder may have died before storing or
        publishing it: created under the recorded id if missing, and its message again."""
        assert failed.next_execution_id is not None
        retry = await TaskTracker.find_execution(failed.next_execution_id)
        if retry is None:
            retry = await self.create(
                failed, failed.next_execution_id, failed.payload, self.rules.retry_policy.tiers[0]
            )
        if retry is None or retry.status is not TaskStatus.QUEUED:
            return ()
        remaining = max((retry.enqueued_at - utcnow()).total_seconds(), 0.0)
        delay = self.rules.retry_policy.tier_for(remaining) if remaining > 0 else 0.0
        log.info("republishing the retry of a failed execution", execution_id=retry.execution_id)
        return (self.message_for(retry, delay),)

    def message_for(
        self, execution: TaskTracker, delay: float, routing_key: str | None = None
    ) -> OutgoingMessage:
        """The message of ``execution``: to ``routing_key``, else to the delay queue of
        ``delay`` (the work queue itself when 0)."""
        queue = self.rules.queue
        if routing_key is None:
            routing_key = retry_queue_name(queue, round(delay * 1000)) if delay > 0 else queue
        return task_message(
            queue,
            encode_stored_payload(execution.payload),
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            retry_count=execution.retry_count,
            max_retries=execution.max_retries,
            routing_key=routing_key,
        )


def retry_delay(rules: QueueRules, error: Exception, retry_count: int) -> float:
    """The delay tier of the next attempt: the handler's own ``Retry(delay=...)``, else the
    policy's backoff."""
    policy = rules.retry_policy
    wanted = error.delay if isinstance(error, Retry) and error.delay is not None else None
    return policy.tier_for(wanted if wanted is not None else policy.backoff(retry_count))
