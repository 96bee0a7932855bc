"""Recording what became of an attempt: completed, failed with a retry, dead-lettered,
expired, or rejected as bad input.

One service for everyone who records an outcome: the processor after a handler ran, the
deadline listener and the sweeper when an attempt outlived its timeout, the operator's
``stuck --fail``. Each write is fenced by the claim token, so whoever comes second finds the
outcome already recorded and changes nothing. Follow-up messages (the retry, a copy for
``.dlq``) are returned in a ``Decision`` for the transport to publish.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from tracker.classify import classify, error_message, error_stack
from tracker.clock import new_execution_id, utcnow
from tracker.constants import MAX_RESULT_BYTES, dlq_name, retry_queue_name
from tracker.consumer import QueueRules, TaskContext, task_context
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import (
    Envelope,
    OutgoingMessage,
    dead_letter_copy,
    encode_payload,
    task_message,
    with_error,
)
from tracker.errors import ControlFlow, Reject, Retry, StaleClaimError, TaskTimeout
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Middleware, run_hooks
from tracker.models import TaskTracker
from tracker.store import transitions
from tracker.store.executions import create_execution

log = structlog.get_logger("tracker.outcomes")
T = TypeVar("T")


class Outcomes:
    """Records outcomes for the executions of one queue, under ``rules``.

    ``store_retry_budget``: how long an outcome write is retried while MongoDB is
    unreachable before giving up (the handler's work is done and worth keeping).
    """

    def __init__(
        self,
        rules: QueueRules,
        worker_id: str,
        middleware: tuple[Middleware, ...] = (),
        store_retry_budget: float = 10.0,
    ) -> None:
        self.rules = rules
        self.worker_id = worker_id
        self.middleware = middleware
        self.store_retry_budget = store_retry_budget

    # -- the handler's outcome ---------------------------------------------------------------

    async def complete(self, task: TaskContext, token: str, result: Any) -> Decision:
        await self._store_write(
            lambda: transitions.transition(
                task.execution_id,
                TaskStatus.COMPLETED,
                claim_token=token,
                message="completed",
                worker=self.worker_id,
                fields={"result": bounded_result(result), **expiry(self.rules.retention)},
            )
        )
        task.log.info("task completed")
        return Decision("completed", execution_id=task.execution_id)

    async def fail(
        self, task: TaskContext, token: str, error: Exception, envelope: Envelope | None
    ) -> Decision:
        """Fail the attempt held by ``token``: schedule a retry, or dead-letter it. The copy
        for ``.dlq`` is ``envelope`` as delivered, or built from the stored payload."""
        rules = self.rules
        category = classify(error, hook=rules.classify, retry_on=rules.retry_on)
        message = error_message(error)
        error_fields = {
            "errorMessage": message,
            "errorCategory": category.value,
            "errorStack": None if isinstance(error, ControlFlow) else error_stack(error),
            "errorType": type(error).__name__,
        }
        retry = not isinstance(error, Reject) and rules.retry_policy.should_retry(
            category, task.retry_count, task.max_retries
        )
        if not retry:
            return await self._dead_letter(task, token, error, category, error_fields, envelope)
        policy = rules.retry_policy
        wanted = error.delay if isinstance(error, Retry) and error.delay is not None else None
        delay = policy.tier_for(wanted if wanted is not None else policy.backoff(task.retry_count))
        next_id = new_execution_id()
        await self._store_write(
            lambda: transitions.transition(
                task.execution_id,
                TaskStatus.FAILED,
                claim_token=token,
                message=message,
                worker=self.worker_id,
                fields={
                    **error_fields,
                    "nextExecutionId": next_id,
                    **expiry(rules.archived_retention),
                },
            )
        )
        retry_doc = await self._store_write(
            lambda: self.create_retry(task.execution, next_id, task.payload, delay)
        )
        task.log.warning(
            "task failed, retry scheduled",
            category=category.value,
            error=message,
            retry_in_seconds=delay,
            next_execution_id=next_id,
        )
        await run_hooks(self.middleware, "on_failure", task, category, True, error)
        publish = () if retry_doc is None else (self.message_for(retry_doc, delay),)
        return Decision("retried", publish=publish, execution_id=task.execution_id)

    async def _dead_letter(
        self,
        task: TaskContext,
        token: str,
        error: Exception,
        category: ErrorCategory,
        error_fields: dict[str, Any],
        envelope: Envelope | None,
    ) -> Decision:
        message = error_fields["errorMessage"]
        await self._store_write(
            lambda: transitions.transition(
                task.execution_id,
                TaskStatus.DLQ,
                claim_token=token,
                message=message,
                worker=self.worker_id,
                fields=error_fields,
            )
        )
        task.log.warning("task dead-lettered", category=category.value, error=message)
        await run_hooks(self.middleware, "on_failure", task, category, False, error)
        routing_key = dlq_name(self.rules.queue)
        copy = (
            dead_letter_copy(envelope, routing_key, category.value, message)
            if envelope is not None
            else with_error(self.message_for(task.execution, 0.0, routing_key), category, message)
        )
        return Decision("dead_lettered", publish=(copy,), execution_id=task.execution_id)

    # -- attempts that outlived their timeout ---------------------------------------------------

    async def expire(self, execution_id: str, claim_token: str | None) -> Decision | None:
        """Fail an execution that outlived its timeout, if, and only if, it is still
        processing under ``claim_token`` (any claim when None). None when it was not: it
        finished, or another path (the worker, the deadline, the sweeper) failed it first."""
        execution = await TaskTracker.find_execution(execution_id)
        if execution is None or execution.status is not TaskStatus.PROCESSING:
            return None
        token = execution.claim_token
        if token is None or (claim_token is not None and token != claim_token):
            return None
        task = task_context(execution, self.rules, execution.payload)
        try:
            return await self.fail(task, token, TaskTimeout(self.rules.timeout_text()), None)
        except StaleClaimError:
            return None

    # -- retries --------------------------------------------------------------------------------

    async def create_retry(
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

    async def recover_retry(self, failed: TaskTracker) -> tuple[OutgoingMessage, ...]:
        """The retry of a failed execution whose holder may have died before storing or
        publishing it: created under the recorded id if missing, and its message again."""
        assert failed.next_execution_id is not None
        retry = await TaskTracker.find_execution(failed.next_execution_id)
        if retry is None:
            retry = await self.create_retry(
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
            encode_payload(execution.payload),
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            retry_count=execution.retry_count,
            max_retries=execution.max_retries,
            routing_key=routing_key,
        )

    async def _store_write(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run an outcome write, retrying while MongoDB is unreachable for up to the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store_retry_budget
        pause = 0.05
        while True:
            try:
                return await write()
            except (DuplicateKeyError, StaleClaimError):
                raise
            except PyMongoError as error:
                if loop.time() + pause > deadline:
                    raise
                log.warning("outcome write failed, retrying", error=str(error), in_seconds=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)


def expiry(retention: float | None) -> dict[str, Any]:
    """``expiresAt`` for the TTL index, or nothing when kept forever."""
    if retention is None:
        return {}
    return {"expiresAt": utcnow() + timedelta(seconds=retention)}


def bounded_result(result: Any) -> Any:
    """The handler's return value as stored: JSON-compatible and at most MAX_RESULT_BYTES."""
    if result is None:
        return None
    try:
        encoded = json.dumps(result, default=str)
    except (TypeError, ValueError):
        encoded = json.dumps(repr(result))
    if len(encoded) > MAX_RESULT_BYTES:
        return {"truncated": True, "preview": encoded[: MAX_RESULT_BYTES // 4]}
    return json.loads(encoded)
