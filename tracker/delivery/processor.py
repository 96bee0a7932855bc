"""The tracked life of one delivery, free of any transport: read, decide, run, record.

``Processor.process`` reads the delivery, claims its execution, decides what to do
(``decision.decide``), runs the handler under its timeout, records the outcome
(``outcomes.Outcomes``) and returns a ``Decision``: the messages the transport must publish
with confirms, then whether to ack or requeue. The adapters only carry that decision out
(``settle``), so "outcome durable, then follow-ups published, then ack" holds for every
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from tracker.clock import utcnow
from tracker.consumer import TaskContext, TrackedConsumer, task_context
from tracker.delivery.decision import Action, Decision, Sighting, decide
from tracker.delivery.envelope import (
    Envelope,
    InvalidMessage,
    OutgoingMessage,
    TaskMessage,
    read,
)
from tracker.delivery.leases import Heartbeat
from tracker.delivery.outcomes import Outcomes
from tracker.delivery.rejection import Rejections
from tracker.errors import StaleClaimError, TaskTimeout
from tracker.lifecycle import TaskStatus
from tracker.middleware import Middleware, run_hooks
from tracker.models import TaskTracker
from tracker.store.claims import Claim, ClaimRequest, claim_many, release_claim
from tracker.store.executions import create_execution

log = structlog.get_logger("tracker.processor")

RunHandler = Callable[[TaskContext], Awaitable[Any]]


@dataclass
class Claimed:
    """A claimed execution whose handler may run now."""

    task: TaskContext
    token: str
    envelope: Envelope
    heartbeat: Heartbeat
    handler_task: asyncio.Future[Any] | None = field(default=None, repr=False)

    @property
    def claim_lost(self) -> bool:
        return self.heartbeat.lost


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
        self.outcomes = Outcomes(
            consumer, options.worker_id, middleware, options.store_retry_budget
        )
        self.rejections = Rejections(consumer.queue, options.worker_id, middleware)
        # Cleared only to simulate a crash: a dead process releases nothing.
        self.release_on_cancel = True

    async def process(self, envelope: Envelope, run: RunHandler | None = None) -> Decision:
        """Claim, run the handler (``run``, by default the consumer's), record the outcome."""
        started = await self.begin(envelope)
        if isinstance(started, Decision):
            return started
        try:
            result = await self.run(started, run or self.consumer.handler)
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

    async def run(self, claimed: Claimed, handler: RunHandler) -> Any:
        """Run ``handler`` as its own task (so that losing the claim can stop it alone), under
        the consumer's timeout plus a grace: the deadline listener fails the execution at the
        timeout, the worker stops the handler a little later in case it cannot."""
        task = claimed.task
        await run_hooks(self.middleware, "after_claim", task)
        with structlog.contextvars.bound_contextvars(
            queue=task.queue,
            task_id=task.task_id,
            execution_id=task.execution_id,
            retry_count=task.retry_count,
        ):
            claimed.handler_task = asyncio.ensure_future(handler(task))
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

    async def finish(
        self, claimed: Claimed, *, result: Any = None, error: Exception | None = None
    ) -> Decision:
        """Make the outcome of a handler run durable and say what follows."""
        await claimed.heartbeat.stop()
        task = claimed.task
        await run_hooks(self.middleware, "after_handler", task, error)
        try:
            if claimed.claim_lost or isinstance(error, StaleClaimError):
                decision = Decision("stale", execution_id=task.execution_id)
            elif error is None:
                decision = await self.outcomes.complete(task, claimed.token, result)
            else:
                decision = await self.outcomes.fail(task, claimed.token, error, claimed.envelope)
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
        await claimed.heartbeat.stop()
        await run_hooks(self.middleware, "on_abandoned", claimed.task)
        if not self.release_on_cancel:
            return
        with contextlib.suppress(PyMongoError, asyncio.CancelledError):
            await release_claim(claimed.task.execution_id, claimed.token)

    async def expire(self, execution_id: str, claim_token: str | None) -> Decision | None:
        """See ``Outcomes.expire``."""
        return await self.outcomes.expire(execution_id, claim_token)

    # -- claiming -------------------------------------------------------------------------

    async def _claim(
        self, envelope: Envelope, message: TaskMessage | InvalidMessage
    ) -> Claimed | Decision:
        valid = isinstance(message, TaskMessage)
        while True:
            [claim] = await claim_many([self._claim_request(message)])
            action = decide(
                valid=valid, redelivered=envelope.redelivered, sighting=_sighting(claim)
            )
            if action is not Action.WAIT_FOR_LEASE:
                break
            assert claim.execution is not None
            await self._wait_for_lease(claim.execution)
        if isinstance(message, TaskMessage):
            return await self._act_on_task(action, envelope, message, claim)
        return await self._act_on_invalid(action, envelope, message, claim)

    async def _act_on_task(
        self, action: Action, envelope: Envelope, message: TaskMessage, claim: Claim
    ) -> Claimed | Decision:
        if action is Action.TRACK_ON_ARRIVAL:
            return await self._track_on_arrival(envelope, message)
        assert claim.execution is not None
        if action is Action.RUN:
            assert claim.token is not None
            return self._claimed(envelope, message, claim.execution, claim.token)
        return await self._duplicate(envelope, claim.execution, action)

    async def _act_on_invalid(
        self, action: Action, envelope: Envelope, message: InvalidMessage, claim: Claim
    ) -> Decision:
        if action is Action.REJECT_UNKNOWN:
            rejected = await self.rejections.reject_unknown(envelope, message)
            if isinstance(rejected, Decision):
                return rejected
            return await self._duplicate(envelope, rejected, Action.SKIP_DUPLICATE)
        assert claim.execution is not None
        if action is Action.REJECT_CLAIMED:
            assert claim.token is not None
            return await self.rejections.reject_claimed(envelope, message, claim.token)
        return await self._duplicate(envelope, claim.execution, action)

    def _claim_request(self, message: TaskMessage | InvalidMessage) -> ClaimRequest:
        explicit = message.max_retries if isinstance(message, TaskMessage) else None
        return ClaimRequest(
            message.execution_id,
            worker=self.options.worker_id,
            lease=self.options.lease,
            timeout=self.consumer.timeout,
            default_max_retries=self.consumer.max_retries if explicit is None else explicit,
        )

    async def _track_on_arrival(
        self, envelope: Envelope, message: TaskMessage
    ) -> Claimed | Decision:
        """A delivery with no tracker record (a plain producer): track it on arrival."""
        now = utcnow()
        token = str(uuid.uuid4())
        created = await create_execution(
            message.task_id,
            self.consumer.queue,
            message.payload,
            execution_id=message.execution_id,
            status=TaskStatus.PROCESSING,
            retry_count=message.retry_count,
            max_retries=self._claim_request(message).default_max_retries,
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
            return await self._duplicate(envelope, created.execution, Action.SKIP_DUPLICATE)
        return self._claimed(envelope, message, created.execution, token)

    def _claimed(
        self, envelope: Envelope, message: TaskMessage, execution: TaskTracker, token: str
    ) -> Claimed:
        task = task_context(execution, self.consumer, message.payload, envelope.redelivered)
        claimed: Claimed

        def on_lost() -> None:
            task.log.warning("claim lost while the handler ran; stopping it")
            if claimed.handler_task is not None:
                claimed.handler_task.cancel()

        heartbeat = Heartbeat(execution.execution_id, token, self.options.lease, on_lost)
        claimed = Claimed(task=task, token=token, envelope=envelope, heartbeat=heartbeat)
        heartbeat.start()
        return claimed

    async def _wait_for_lease(self, execution: TaskTracker) -> None:
        lease_end = execution.lease_expires_at or utcnow()
        while (remaining := (lease_end - utcnow()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining + 0.01, max(self.options.lease / 10, 0.05)))
            current = await TaskTracker.find_execution(execution.execution_id)
            if current is None or current.status is not TaskStatus.PROCESSING:
                return
            lease_end = current.lease_expires_at or utcnow()

    async def _duplicate(
        self, envelope: Envelope, execution: TaskTracker, action: Action
    ) -> Decision:
        publish: tuple[OutgoingMessage, ...] = ()
        if action is Action.RECOVER_RETRY:
            publish = await self.outcomes.recover_retry(execution)
        log.info(
            "duplicate delivery skipped",
            queue=self.consumer.queue,
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            status=execution.status.value,
        )
        await run_hooks(self.middleware, "on_duplicate", envelope, execution)
        return Decision("duplicate", publish=publish, execution_id=execution.execution_id)

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


def _sighting(claim: Claim) -> Sighting:
    execution = claim.execution
    if execution is None:
        return Sighting(found=False)
    return Sighting(
        found=True,
        won=claim.won,
        status=execution.status,
        has_next_execution=execution.next_execution_id is not None,
    )
