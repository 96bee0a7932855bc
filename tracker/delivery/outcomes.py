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
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from pymongo.errors import PyMongoError

from tracker.classify import classify, error_message, error_stack
from tracker.clock import new_execution_id, utcnow
from tracker.constants import MAX_RESULT_BYTES
from tracker.consumer import QueueRules, TaskContext, task_context
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import (
    Envelope,
    OutgoingMessage,
)
from tracker.delivery.retries import Retries, retry_delay
from tracker.errors import (
    ControlFlow,
    Reject,
    StaleClaimError,
    TaskTimeout,
    UnstorableResult,
)
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Hooks, Middleware
from tracker.models import TaskTracker
from tracker.operations import groups
from tracker.store import transitions
from tracker.store.errors import describe, is_transient
from tracker.store.group_commit import DEFAULT_MAX_BATCH, GroupCommit
from tracker.validation import storage_problem

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
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.rules = rules
        self.retries = Retries(rules)
        self.worker_id = worker_id
        self.hooks = Hooks(middleware)
        self.store_retry_budget = store_retry_budget
        # Completions of concurrent deliveries share a round trip; failures, rare and each
        # followed by its retry's own writes, go one by one.
        self.completions: GroupCommit[transitions.Transition, transitions.TransitionResult] = (
            GroupCommit(transitions.apply, max_batch)
        )

    # -- the handler's outcome ---------------------------------------------------------------

    async def complete(
        self, task: TaskContext, token: str, result: Any, envelope: Envelope | None = None
    ) -> Decision:
        """Complete the attempt with ``result``; a result MongoDB cannot store fails it."""
        stored, problem = storable_result(result)
        if problem is not None:
            return await self.fail(task, token, UnstorableResult(problem), envelope)
        # A repeated write of our own completion (its reply was lost) reports no change:
        # it is still this completion.
        completion = transitions.Transition(
            task.execution_id,
            TaskStatus.COMPLETED,
            claim_token=token,
            message="completed",
            worker=self.worker_id,
            fields={"result": stored, **expiry(self.rules.retention)},
            task_id=task.task_id,
        )
        await self._store_write(lambda: self.completions.submit(completion))
        # The module's logger: the task's own is made only when a line is worth writing.
        log.debug("task completed", queue=task.queue, task_id=task.task_id)
        return Decision("completed", execution_id=task.execution_id)

    async def fail(
        self, task: TaskContext, token: str, error: Exception, envelope: Envelope | None
    ) -> Decision:
        """Fail the attempt held by ``token``: schedule a retry, or dead-letter it.

        Exactly one failure is recorded per attempt: when the attempt was already failed
        under this claim (the deadline and the worker's own timer both fired), this call
        records nothing, counts nothing, and only makes sure the retry that was recorded
        exists and is published."""
        rules = self.rules
        category = classify(error, hook=rules.classify, retry_on=rules.retry_on)
        message = error_message(error)
        error_fields = {
            "errorMessage": message,
            "errorCategory": category.value,
            "errorStack": None if isinstance(error, ControlFlow) else error_stack(error),
            "errorType": getattr(error, "error_type", None) or type(error).__name__,
        }
        final = isinstance(error, Reject) or getattr(error, "final", False)
        if final or not rules.retry_policy.should_retry(
            category, task.retry_count, task.max_retries
        ):
            return await self._dead_letter(task, token, error, category, error_fields)
        delay = retry_delay(rules, error, task.retry_count)
        next_id = new_execution_id()
        _, changed = await self._store_write(
            lambda: transitions.transition(
                task.execution_id,
                TaskStatus.FAILED,
                claim_token=token,
                message=message,
                worker=self.worker_id,
                task_id=task.task_id,
                fields={
                    **error_fields,
                    "nextExecutionId": next_id,
                    **expiry(rules.archived_retention),
                },
            )
        )
        if not changed:
            return await self._already_failed(task)
        payload = received_payload(task, envelope)
        retry_doc = await self._store_write(
            lambda: self.retries.create(task.execution, next_id, payload, delay)
        )
        task.log.warning(
            "task failed, retry scheduled",
            category=category.value,
            error=message,
            retry_in_seconds=delay,
            next_execution_id=next_id,
        )
        await self.hooks.run("on_failure", task, category, True, error)
        publish = () if retry_doc is None else (self.retries.message_for(retry_doc, delay),)
        return Decision("retried", publish=publish, execution_id=task.execution_id)

    async def _dead_letter(
        self,
        task: TaskContext,
        token: str,
        error: Exception,
        category: ErrorCategory,
        error_fields: dict[str, Any],
    ) -> Decision:
        """Record the dead letter. MongoDB holds it, its payload and its reason; no copy goes
        to ``.dlq`` (that queue holds only what the broker itself dead-lettered)."""
        message = error_fields["errorMessage"]
        cause = (task.queue, category.value, error_fields["errorType"], message)
        error_fields = {**error_fields, "groupId": groups.group_id(*cause)}
        _, changed = await self._store_write(
            lambda: transitions.transition(
                task.execution_id,
                TaskStatus.DLQ,
                claim_token=token,
                message=message,
                worker=self.worker_id,
                task_id=task.task_id,
                fields=error_fields,
            )
        )
        if not changed:
            return Decision("stale", execution_id=task.execution_id)
        await groups.noted(*cause, task.execution_id)
        task.log.warning("task dead-lettered", category=category.value, error=message)
        await self.hooks.run("on_failure", task, category, False, error)
        return Decision("dead_lettered", execution_id=task.execution_id)

    async def unstorable(self, task: TaskContext, token: str, error: BaseException) -> Decision:
        """The outcome could not be stored and never will be (a permanent store error):
        dead-letter the attempt with only the reason, so the handler is not run again."""
        reason = f"the outcome could not be stored: {describe(error)}"
        cause = (task.queue, ErrorCategory.INFRASTRUCTURE.value, type(error).__name__, reason)
        _, changed = await transitions.transition(
            task.execution_id,
            TaskStatus.DLQ,
            claim_token=token,
            message=reason,
            worker=self.worker_id,
            task_id=task.task_id,
            fields={
                "errorMessage": reason,
                "errorCategory": ErrorCategory.INFRASTRUCTURE.value,
                "errorType": type(error).__name__,
                "groupId": groups.group_id(*cause),
            },
        )
        if changed:
            await groups.noted(*cause, task.execution_id)
        task.log.error("outcome not storable: dead-lettered", error=reason)
        return Decision("dead_lettered", execution_id=task.execution_id)

    async def _already_failed(self, task: TaskContext) -> Decision:
        failed = await TaskTracker.find_execution(task.execution_id)
        publish: tuple[OutgoingMessage, ...] = ()
        if failed is not None and failed.next_execution_id is not None:
            publish = await self.retries.recover(failed)
        return Decision("stale", publish=publish, execution_id=task.execution_id)

    # -- attempts that outlived their timeout ---------------------------------------------------

    async def expire(self, execution_id: str, claim_token: str | None) -> Decision | None:
        """Fail an execution that outlived its timeout, if, and only if, it is still
        processing under ``claim_token`` (any claim when None). None when it was not: it
        finished, or another path (the worker, the deadline, the sweeper) failed it first."""
        execution = await TaskTracker.find_execution(execution_id)
        if execution is None:
            return None
        failed_under_this_claim = (
            execution.status is TaskStatus.FAILED
            and execution.next_execution_id is not None
            and claim_token in (None, execution.claim_token)
        )
        if failed_under_this_claim:
            # Perhaps by a run of this very call that died before the retry was stored:
            # make sure the retry exists and goes out.
            publish = await self.retries.recover(execution)
            return Decision("stale", publish=publish, execution_id=execution_id)
        if execution.status is not TaskStatus.PROCESSING:
            return None
        token = execution.claim_token
        if token is None or (claim_token is not None and token != claim_token):
            return None
        task = task_context(execution, self.rules, execution.payload)
        try:
            return await self.fail(task, token, TaskTimeout(self.rules.timeout_text()), None)
        except StaleClaimError:
            return None

    async def _store_write(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run an outcome write, retrying while MongoDB is unreachable for up to the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store_retry_budget
        pause = 0.05
        while True:
            try:
                return await write()
            except PyMongoError as error:
                if not is_transient(error) or loop.time() + pause > deadline:
                    raise
                log.warning(
                    "outcome write failed, retrying", error=describe(error), in_seconds=pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)


def expiry(retention: float | None) -> dict[str, Any]:
    """``expiresAt`` for the TTL index, or nothing when kept forever."""
    if retention is None:
        return {}
    return {"expiresAt": utcnow() + timedelta(seconds=retention)}


def received_payload(task: TaskContext, envelope: Envelope | None) -> Any:
    """The payload as it arrived (the handler may have changed ``task.payload``): read again
    from the delivery, else the stored one."""
    if envelope is not None:
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(envelope.body)
    return task.execution.payload


def storable_result(result: Any) -> tuple[Any, str | None]:
    """The handler's return value as stored (JSON-compatible, at most MAX_RESULT_BYTES
    encoded), or why it cannot be stored."""
    if result is None:
        return None, None
    try:
        stored = json.loads(json.dumps(result, default=str))
    except Exception as exc:  # a custom object's __str__ may raise anything
        return None, f"it is not JSON: {type(exc).__name__}"
    problem = storage_problem(stored, "it", MAX_RESULT_BYTES)
    return (stored, None) if problem is None else (None, problem)
