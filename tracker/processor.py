"""The tracked life of one delivery, free of any transport.

``Processor.process`` claims the execution, runs the handler, makes its outcome durable and
returns a ``Decision``: the messages the transport must publish (confirmed) and then whether to
ack or requeue the delivery. The RabbitMQ adapters only carry that decision out, so the order
"outcome durable, then follow-ups published, then ack" holds for every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from tracker import states
from tracker.classify import classify, error_message, error_stack
from tracker.clock import new_execution_id, utcnow
from tracker.constants import MAX_RESULT_BYTES, dlq_name, retry_queue_name
from tracker.consumer import TaskContext, TrackedConsumer
from tracker.envelope import (
    Envelope,
    InvalidMessage,
    OutgoingMessage,
    TaskMessage,
    dead_letter_copy,
    read,
    task_message,
    with_error,
)
from tracker.errors import ControlFlow, Reject, Retry, StaleClaimError, TaskTimeout
from tracker.middleware import Middleware, run_hooks
from tracker.models import ErrorCategory, TaskStatus, TaskTracker
from tracker.store import create_execution, encode_payload

log = structlog.get_logger("tracker.processor")
# The errorType of a delivery that broke the message contract.
REJECTED_TYPE = "InvalidMessage"
T = TypeVar("T")

Outcome = Literal[
    "completed",
    "retried",
    "dead_lettered",
    "rejected",
    "duplicate",
    "stale",
    "store_unavailable",
    "error",
]


@dataclass(frozen=True)
class Decision:
    """What the transport does with a delivery: publish ``publish`` with confirms, then ack it,
    or (``requeue``) wait ``requeue_delay`` seconds and return it to its queue."""

    outcome: Outcome
    publish: tuple[OutgoingMessage, ...] = ()
    requeue: bool = False
    requeue_delay: float = 0.0
    execution_id: str | None = None


@dataclass
class Claimed:
    """A claimed execution whose handler may run now."""

    task: TaskContext
    token: str
    envelope: Envelope
    # A timer, not a task: most handlers finish before the first renewal is due.
    heartbeat: asyncio.TimerHandle | None = field(default=None, repr=False)
    renewal: asyncio.Task[None] | None = field(default=None, repr=False)
    handler_task: asyncio.Future[Any] | None = field(default=None, repr=False)
    claim_lost: bool = False


@dataclass(frozen=True)
class ProcessorOptions:
    """``lease``: how long a claim stays valid without renewal (renewed every third of it);
    ``requeue_delay``: the pause before a delivery is requeued while MongoDB is down;
    ``store_retry_budget``: how long an outcome write is retried before giving up;
    ``timeout_grace``: how long past the consumer's timeout the worker itself stops a handler
    (the deadline listener fails the execution at the timeout)."""

    worker_id: str
    lease: float = 30.0
    requeue_delay: float = 1.0
    store_retry_budget: float = 10.0
    timeout_grace: float = 5.0


class Processor:
    def __init__(
        self,
        consumer: TrackedConsumer,
        options: ProcessorOptions,
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        self.consumer = consumer
        self.options = options
        self.middleware = middleware
        # Cleared only to simulate a crash: a dead process releases nothing.
        self.release_on_cancel = True

    async def process(self, envelope: Envelope) -> Decision:
        """Claim, run the consumer's handler, record the outcome."""
        started = await self.begin(envelope)
        if isinstance(started, Decision):
            return started
        try:
            result = await self._run_handler(started)
        except asyncio.CancelledError:
            await self.abandon(started)
            raise
        except Exception as error:
            return await self.finish(started, error=error)
        return await self.finish(started, result=result)

    async def begin(self, envelope: Envelope) -> Claimed | Decision:
        """Read the delivery and claim its execution; a ``Decision`` when there is nothing to
        run (duplicate, rejected, MongoDB down)."""
        await run_hooks(self.middleware, "before_process", envelope)
        message = read(envelope, self.consumer.max_payload_bytes)
        try:
            return await self._claim(envelope, message)
        except PyMongoError as error:
            return await self._store_unavailable(envelope, error)

    async def finish(
        self, claimed: Claimed, *, result: Any = None, error: Exception | None = None
    ) -> Decision:
        """Make the outcome of a handler run durable and say what follows."""
        await self._stop_heartbeat(claimed)
        task = claimed.task
        await run_hooks(self.middleware, "after_handler", task, error)
        try:
            if claimed.claim_lost:
                decision = Decision("stale", execution_id=task.execution_id)
            elif error is None:
                decision = await self._complete(claimed, result)
            else:
                decision = await self._fail(claimed, error)
        except StaleClaimError as stale:
            log.warning("outcome refused: the claim was superseded", reason=str(stale))
            decision = Decision("stale", execution_id=task.execution_id)
        except PyMongoError as store_error:
            return await self._store_unavailable(claimed.envelope, store_error)
        await run_hooks(self.middleware, "after_outcome", task, decision)
        return decision

    async def abandon(self, claimed: Claimed) -> None:
        """The handler was cancelled (the worker is stopping): expire the lease, so the
        requeued delivery is taken over at once rather than after the lease."""
        await self._stop_heartbeat(claimed)
        await run_hooks(self.middleware, "on_abandoned", claimed.task)
        if not self.release_on_cancel:
            return
        with contextlib.suppress(PyMongoError, asyncio.CancelledError):
            await states.release_claim(claimed.task.execution_id, claimed.token)

    # -- claiming -------------------------------------------------------------------------

    async def _claim(
        self, envelope: Envelope, message: TaskMessage | InvalidMessage
    ) -> Claimed | Decision:
        while True:
            claim = await states.claim(
                message.execution_id,
                worker=self.options.worker_id,
                lease=self.options.lease,
                timeout=self.consumer.timeout,
                default_max_retries=self._max_retries(message),
            )
            if claim.execution is None:
                return await self._first_sight(envelope, message)
            if claim.won:
                assert claim.token is not None
                if isinstance(message, InvalidMessage):
                    return await self._reject_claimed(envelope, message, claim.token)
                return self._claimed(envelope, message, claim.execution, claim.token)
            execution = claim.execution
            if execution.status is TaskStatus.PROCESSING and envelope.redelivered:
                # The delivery came back because its previous holder's channel closed: that
                # holder may be dead. Wait for its lease to lapse (or its outcome), then retry.
                await self._wait_for_lease(execution)
                continue
            return await self._duplicate(envelope, execution)

    async def _first_sight(
        self, envelope: Envelope, message: TaskMessage | InvalidMessage
    ) -> Claimed | Decision:
        """A delivery with no tracker record (a plain producer): track it on arrival."""
        if isinstance(message, InvalidMessage):
            return await self._reject_unknown(envelope, message)
        now = utcnow()
        token = str(uuid.uuid4())
        created = await create_execution(
            message.task_id,
            self.consumer.queue,
            message.payload,
            execution_id=message.execution_id,
            status=TaskStatus.PROCESSING,
            retry_count=message.retry_count,
            max_retries=self._max_retries(message),
            message_version=message.message_version,
            history_message="tracked on arrival",
            fields={
                "claimToken": token,
                "claimedBy": self.options.worker_id,
                "processingStartedAt": now,
                "leaseExpiresAt": now + timedelta(seconds=self.options.lease),
                "timeoutSeconds": self.consumer.timeout,
            },
        )
        if created.deduplicated:
            return await self._duplicate(envelope, created.execution)
        return self._claimed(envelope, message, created.execution, token)

    def _claimed(
        self, envelope: Envelope, message: TaskMessage, execution: TaskTracker, token: str
    ) -> Claimed:
        task = self._context(execution, message.payload, envelope.redelivered)
        claimed = Claimed(task=task, token=token, envelope=envelope)
        self._schedule_heartbeat(claimed)
        return claimed

    def _context(self, execution: TaskTracker, payload: Any, redelivered: bool) -> TaskContext:
        bound = {
            "queue": self.consumer.queue,
            "task_id": execution.task_id,
            "execution_id": execution.execution_id,
            "retry_count": execution.retry_count,
        }
        return TaskContext(
            payload=payload,
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            retry_count=execution.retry_count,
            max_retries=(
                self.consumer.max_retries
                if execution.max_retries is None
                else execution.max_retries
            ),
            queue=self.consumer.queue,
            metadata=execution.metadata,
            log=structlog.get_logger("tracker.task").bind(**bound),
            execution=execution,
            redelivered=redelivered,
        )

    async def _wait_for_lease(self, execution: TaskTracker) -> None:
        lease_end = execution.lease_expires_at or utcnow()
        while (remaining := (lease_end - utcnow()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining + 0.01, max(self.options.lease / 10, 0.05)))
            current = await TaskTracker.find_execution(execution.execution_id)
            if current is None or current.status is not TaskStatus.PROCESSING:
                return
            lease_end = current.lease_expires_at or utcnow()

    async def _duplicate(self, envelope: Envelope, execution: TaskTracker) -> Decision:
        publish: tuple[OutgoingMessage, ...] = ()
        if (
            envelope.redelivered
            and execution.status is TaskStatus.FAILED
            and execution.next_execution_id
        ):
            # Its holder died after recording the failure: maybe before the retry was stored
            # or published. (A copy that is not a redelivery had a live holder: no need.)
            publish = await self._ensure_retry(execution)
        log.info(
            "duplicate delivery skipped",
            queue=self.consumer.queue,
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            status=execution.status.value,
        )
        await run_hooks(self.middleware, "on_duplicate", envelope, execution)
        return Decision("duplicate", publish=publish, execution_id=execution.execution_id)

    # -- outcomes -------------------------------------------------------------------------

    async def _run_handler(self, claimed: Claimed) -> Any:
        task = claimed.task
        await run_hooks(self.middleware, "after_claim", task)
        with structlog.contextvars.bound_contextvars(
            queue=task.queue,
            task_id=task.task_id,
            execution_id=task.execution_id,
            retry_count=task.retry_count,
        ):
            # The handler runs as its own task so that losing the claim can stop it alone.
            claimed.handler_task = asyncio.ensure_future(self.consumer.handler(task))
            # The deadline queue fails the execution at `timeout`; the worker stops the handler
            # a little later, in case the deadline listener cannot (RabbitMQ unreachable).
            limit = self.consumer.timeout + self.options.timeout_grace
            try:
                async with asyncio.timeout(limit):
                    return await claimed.handler_task
            except TimeoutError as exc:
                raise TaskTimeout(self.consumer.timeout_text()) from exc
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if claimed.claim_lost and current is not None and not current.cancelling():
                    raise StaleClaimError(task.execution_id, TaskStatus.PROCESSING) from None
                raise

    async def _complete(self, claimed: Claimed, result: Any) -> Decision:
        task = claimed.task
        await self._store_write(
            lambda: states.transition(
                task.execution_id,
                TaskStatus.COMPLETED,
                claim_token=claimed.token,
                message="completed",
                worker=self.options.worker_id,
                fields={"result": bounded_result(result), **self._expiry(self.consumer.retention)},
            )
        )
        task.log.info("task completed")
        return Decision("completed", execution_id=task.execution_id)

    async def _fail(self, claimed: Claimed, error: Exception) -> Decision:
        if isinstance(error, StaleClaimError):
            raise error
        return await self.record_failure(claimed.task, claimed.token, error, claimed.envelope)

    async def record_failure(
        self, task: TaskContext, token: str, error: Exception, envelope: Envelope | None
    ) -> Decision:
        """Fail the attempt held by ``token``: schedule a retry, or dead-letter it. The copy
        for ``.dlq`` is ``envelope`` as delivered, or built from the stored payload."""
        consumer = self.consumer
        category = classify(error, hook=consumer.classify, retry_on=consumer.retry_on)
        message = error_message(error)
        error_fields = {
            "errorMessage": message,
            "errorCategory": category.value,
            "errorStack": None if isinstance(error, ControlFlow) else error_stack(error),
            "errorType": type(error).__name__,
        }
        retry = not isinstance(error, Reject) and consumer.retry_policy.should_retry(
            category, task.retry_count, task.max_retries
        )
        if not retry:
            await self._store_write(
                lambda: states.transition(
                    task.execution_id,
                    TaskStatus.DLQ,
                    claim_token=token,
                    message=message,
                    worker=self.options.worker_id,
                    fields=error_fields,
                )
            )
            task.log.warning("task dead-lettered", category=category.value, error=message)
            await run_hooks(self.middleware, "on_failure", task, category, False, error)
            routing_key = dlq_name(consumer.queue)
            copy = (
                dead_letter_copy(envelope, routing_key, category.value, message)
                if envelope is not None
                else with_error(
                    self.message_for(task.execution, 0.0, routing_key), category, message
                )
            )
            return Decision("dead_lettered", publish=(copy,), execution_id=task.execution_id)

        policy = consumer.retry_policy
        wanted = error.delay if isinstance(error, Retry) and error.delay is not None else None
        delay = policy.tier_for(wanted if wanted is not None else policy.backoff(task.retry_count))
        next_id = new_execution_id()
        await self._store_write(
            lambda: states.transition(
                task.execution_id,
                TaskStatus.FAILED,
                claim_token=token,
                message=message,
                worker=self.options.worker_id,
                fields={
                    **error_fields,
                    "nextExecutionId": next_id,
                    **self._expiry(self.consumer.archived_retention),
                },
            )
        )
        retry_doc = await self._store_write(
            lambda: self._create_retry(task.execution, next_id, task.payload, delay)
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

    async def expire(self, execution_id: str, claim_token: str | None) -> Decision | None:
        """Fail an execution that outlived its consumer's timeout, if, and only if, it is still
        processing under ``claim_token`` (any claim when None). None when it was not: it
        finished, or another path (the worker, the deadline, the sweeper) failed it first."""
        execution = await TaskTracker.find_execution(execution_id)
        if execution is None or execution.status is not TaskStatus.PROCESSING:
            return None
        token = execution.claim_token
        if token is None or (claim_token is not None and token != claim_token):
            return None
        task = self._context(execution, execution.payload, redelivered=False)
        error = TaskTimeout(self.consumer.timeout_text())
        try:
            return await self.record_failure(task, token, error, None)
        except StaleClaimError:
            return None

    async def _create_retry(
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

    def message_for(
        self, execution: TaskTracker, delay: float, routing_key: str | None = None
    ) -> OutgoingMessage:
        """The message of ``execution``: to ``routing_key``, else to the delay queue of
        ``delay`` (the work queue itself when 0)."""
        queue = self.consumer.queue
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

    async def _ensure_retry(self, failed: TaskTracker) -> tuple[OutgoingMessage, ...]:
        assert failed.next_execution_id is not None
        retry = await TaskTracker.find_execution(failed.next_execution_id)
        if retry is None:
            retry = await self._create_retry(
                failed,
                failed.next_execution_id,
                failed.payload,
                self.consumer.retry_policy.tiers[0],
            )
        if retry is None or retry.status is not TaskStatus.QUEUED:
            return ()
        remaining = max((retry.enqueued_at - utcnow()).total_seconds(), 0.0)
        delay = self.consumer.retry_policy.tier_for(remaining) if remaining > 0 else 0.0
        log.info("republishing the retry of a failed execution", execution_id=retry.execution_id)
        return (self.message_for(retry, delay),)

    # -- bad input --------------------------------------------------------------------------

    async def _reject_unknown(self, envelope: Envelope, message: InvalidMessage) -> Decision:
        created = await create_execution(
            message.task_id,
            self.consumer.queue,
            None,
            execution_id=message.execution_id,
            status=TaskStatus.DLQ,
            history_message=message.reason,
            metadata={"rawBodyPreview": envelope.body[:512].decode("utf-8", errors="replace")},
            fields={
                "errorMessage": message.reason,
                "errorCategory": ErrorCategory.VALIDATION.value,
                "errorType": REJECTED_TYPE,
                "failedAt": utcnow(),
            },
        )
        if created.deduplicated:
            return await self._duplicate(envelope, created.execution)
        return await self._rejected(envelope, message)

    async def _reject_claimed(
        self, envelope: Envelope, message: InvalidMessage, token: str
    ) -> Decision:
        await states.transition(
            message.execution_id,
            TaskStatus.DLQ,
            claim_token=token,
            message=message.reason,
            worker=self.options.worker_id,
            fields={
                "errorMessage": message.reason,
                "errorCategory": ErrorCategory.VALIDATION.value,
                "errorType": REJECTED_TYPE,
            },
        )
        return await self._rejected(envelope, message)

    async def _rejected(self, envelope: Envelope, message: InvalidMessage) -> Decision:
        log.warning(
            "message rejected",
            queue=self.consumer.queue,
            task_id=message.task_id,
            execution_id=message.execution_id,
            reason=message.reason,
        )
        await run_hooks(self.middleware, "on_rejected", envelope, message.reason)
        copy = dead_letter_copy(
            envelope, dlq_name(self.consumer.queue), ErrorCategory.VALIDATION.value, message.reason
        )
        return Decision("rejected", publish=(copy,), execution_id=message.execution_id)

    # -- MongoDB and leases -----------------------------------------------------------------

    async def _store_unavailable(self, envelope: Envelope, error: PyMongoError) -> Decision:
        if isinstance(error, DuplicateKeyError):
            raise error
        log.error(
            "MongoDB unavailable: delivery requeued",
            queue=self.consumer.queue,
            error=str(error),
            requeue_in_seconds=self.options.requeue_delay,
        )
        await run_hooks(self.middleware, "on_store_unavailable", envelope, error)
        return Decision("store_unavailable", requeue=True, requeue_delay=self.options.requeue_delay)

    async def _store_write(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run an outcome write, retrying while MongoDB is unreachable for up to the budget:
        the handler's work is done and worth keeping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.store_retry_budget
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

    def _schedule_heartbeat(self, claimed: Claimed) -> None:
        """Renew the lease every third of it while the handler runs."""
        loop = asyncio.get_running_loop()
        claimed.heartbeat = loop.call_later(self.options.lease / 3, self._beat, claimed)

    def _beat(self, claimed: Claimed) -> None:
        claimed.renewal = asyncio.get_running_loop().create_task(self._renew(claimed))

    async def _renew(self, claimed: Claimed) -> None:
        """One renewal; when the claim is lost (timed out, taken over), stop the handler."""
        try:
            held = await states.renew_lease(
                claimed.task.execution_id, claimed.token, self.options.lease
            )
        except PyMongoError as error:
            log.warning("lease renewal failed", error=str(error))
            held = True
        if held:
            self._schedule_heartbeat(claimed)
            return
        claimed.claim_lost = True
        claimed.task.log.warning("claim lost while the handler ran; stopping it")
        if claimed.handler_task is not None:
            claimed.handler_task.cancel()

    async def _stop_heartbeat(self, claimed: Claimed) -> None:
        if claimed.heartbeat is not None:
            claimed.heartbeat.cancel()
        renewal = claimed.renewal
        if renewal is not None and not renewal.done() and renewal is not asyncio.current_task():
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    @staticmethod
    def _expiry(retention: float | None) -> dict[str, Any]:
        """``expiresAt`` for the TTL index, or nothing when kept forever."""
        if retention is None:
            return {}
        return {"expiresAt": utcnow() + timedelta(seconds=retention)}

    def _max_retries(self, message: TaskMessage | InvalidMessage) -> int:
        explicit = message.max_retries if isinstance(message, TaskMessage) else None
        return self.consumer.max_retries if explicit is None else explicit


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
