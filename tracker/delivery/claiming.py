"""Getting a delivery's execution claimed, or saying why it is not to run: the fenced
claim, the decision table (``decision.decide``) and what each decision does before a
handler could run (track on arrival, wait for a dead holder's lease, skip a duplicate,
reject bad input)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from tracker.clock import random_uuid, utcnow
from tracker.consumer import TaskContext, TrackedConsumer, task_context
from tracker.delivery.decision import Action, Decision, Sighting, decide
from tracker.delivery.envelope import Envelope, InvalidMessage, OutgoingMessage, TaskMessage
from tracker.delivery.leases import Heartbeat
from tracker.delivery.outcomes import Outcomes
from tracker.delivery.rejection import Rejections
from tracker.delivery.running import HandlerRun
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Hooks, Middleware
from tracker.models import TaskTracker
from tracker.store.claims import Claim, ClaimRequest, claim_many
from tracker.store.creation import create_execution
from tracker.store.group_commit import DEFAULT_MAX_BATCH, GroupCommit
from tracker.validation import printable

log = structlog.get_logger("tracker.claiming")


@dataclass(frozen=True)
class ProcessorOptions:
    """``lease``: how long a claim stays valid without renewal (renewed every third of it);
    ``requeue_delay``: the pause before a delivery is requeued while MongoDB is down;
    ``store_retry_budget``: how long an outcome write is retried before giving up;
    ``timeout_grace``: how long past the consumer's timeout the worker itself stops a handler
    (the deadline listener fails the execution at the timeout); ``max_batch``: the most
    claims, or completions, of concurrent deliveries written in one round trip (1: each on
    its own)."""

    worker_id: str
    lease: float = 30.0
    requeue_delay: float = 1.0
    store_retry_budget: float = 10.0
    timeout_grace: float = 5.0
    max_batch: int = DEFAULT_MAX_BATCH


@dataclass
class Claimed:
    """A claimed execution whose handler may run now."""

    task: TaskContext
    token: str
    envelope: Envelope
    heartbeat: Heartbeat
    handler_run: HandlerRun | None = field(default=None, repr=False)

    @property
    def claim_lost(self) -> bool:
        return self.heartbeat.lost


class Claiming:
    """Claims the executions of ``consumer``'s deliveries."""

    def __init__(
        self,
        consumer: TrackedConsumer,
        options: ProcessorOptions,
        middleware: tuple[Middleware, ...],
        outcomes: Outcomes,
        rejections: Rejections,
    ) -> None:
        self.consumer = consumer
        self.options = options
        self.hooks = Hooks(middleware)
        self.outcomes = outcomes
        self.rejections = rejections
        self.claims: GroupCommit[ClaimRequest, Claim] = GroupCommit(claim_many, options.max_batch)

    async def claim(
        self, envelope: Envelope, message: TaskMessage | InvalidMessage
    ) -> Claimed | Decision:
        request = self._claim_request(message)
        while True:
            claim = None if request is None else await self.claims.submit(request)
            action = decide(
                valid=isinstance(message, TaskMessage),
                redelivered=envelope.redelivered,
                sighting=None if claim is None else _sighting(claim),
            )
            if action is not Action.WAIT_FOR_LEASE:
                break
            assert claim is not None
            assert claim.execution is not None
            await self._wait_for_lease(claim.execution)
        if action is Action.REJECT:
            return await self.reject(envelope, _as_invalid(message))
        if action is Action.TRACK_ON_ARRIVAL:
            assert isinstance(message, TaskMessage)
            return await self._track_on_arrival(envelope, message)
        assert claim is not None
        assert claim.document is not None
        if action is Action.RUN:
            assert isinstance(message, TaskMessage)
            assert claim.token is not None
            return self._claimed(envelope, message, claim.document, claim.token)
        if action is Action.REJECT_CLAIMED:
            assert isinstance(message, InvalidMessage)
            assert claim.token is not None
            return await self.rejections.reject_claimed(envelope, message, claim.token)
        assert claim.execution is not None
        return await self._duplicate(envelope, claim.execution, action)

    def _claim_request(self, message: TaskMessage | InvalidMessage) -> ClaimRequest | None:
        """The fenced claim of the execution the delivery names; None when it names none."""
        if message.task_id is None or message.execution_id is None:
            return None
        explicit = message.max_retries if isinstance(message, TaskMessage) else None
        return ClaimRequest(
            message.execution_id,
            worker=self.options.worker_id,
            lease=self.options.lease,
            timeout=self.consumer.timeout,
            default_max_retries=self.consumer.max_retries if explicit is None else explicit,
            task_id=message.task_id,
            queue=self.consumer.queue,
        )

    async def reject(
        self,
        envelope: Envelope,
        message: InvalidMessage,
        category: ErrorCategory = ErrorCategory.VALIDATION,
    ) -> Decision:
        """Record the delivery as rejected (a duplicate when it already was)."""
        rejected = await self.rejections.reject(envelope, message, category)
        if isinstance(rejected, Decision):
            return rejected
        return await self._duplicate(envelope, rejected, Action.SKIP_DUPLICATE)

    async def _track_on_arrival(
        self, envelope: Envelope, message: TaskMessage
    ) -> Claimed | Decision:
        """A delivery with no tracker record (a plain producer): track it on arrival."""
        now = utcnow()
        token = random_uuid()
        created = await create_execution(
            message.task_id,
            self.consumer.queue,
            message.payload,
            execution_id=message.execution_id,
            status=TaskStatus.PROCESSING,
            retry_count=message.retry_count,
            max_retries=self.consumer.max_retries
            if message.max_retries is None
            else message.max_retries,
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
        found = created.execution
        foreign = found.execution_id == message.execution_id and (
            (found.task_id, found.queue_name) != (message.task_id, self.consumer.queue)
        )
        if created.deduplicated and foreign:
            # Created meanwhile under another task or queue: not this delivery's.
            return await self.reject(envelope, _as_invalid(message))
        if created.deduplicated:
            return await self._duplicate(envelope, found, Action.SKIP_DUPLICATE)
        return self._claimed(envelope, message, found, token)

    def _claimed(
        self,
        envelope: Envelope,
        message: TaskMessage,
        execution: TaskTracker | Mapping[str, Any],
        token: str,
    ) -> Claimed:
        task = task_context(execution, self.consumer, message.payload, envelope.redelivered)
        claimed: Claimed

        def on_lost() -> None:
            task.log.warning("claim lost while the handler ran; stopping it")
            if claimed.handler_run is not None:
                claimed.handler_run.cancel()

        heartbeat = Heartbeat(task.execution_id, token, self.options.lease, on_lost, task.task_id)
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
            publish = await self.outcomes.retries.recover(execution)
        log.info(
            "duplicate delivery skipped",
            queue=self.consumer.queue,
            task_id=execution.task_id,
            execution_id=execution.execution_id,
            status=execution.status.value,
        )
        await self.hooks.run("on_duplicate", envelope, execution)
        return Decision("duplicate", publish=publish, execution_id=execution.execution_id)


def _as_invalid(message: TaskMessage | InvalidMessage) -> InvalidMessage:
    """An invalid message as it is; a valid one that names another task's execution as a
    validation failure saying so."""
    if isinstance(message, InvalidMessage):
        return message
    return InvalidMessage(
        f"execution id {printable(message.execution_id, 100)!r} belongs to another task or "
        "queue: this message cannot claim it",
        message.task_id,
        message.execution_id,
    )


def _sighting(claim: Claim) -> Sighting:
    document = claim.document
    if document is None:
        return Sighting(found=False, foreign=claim.foreign)
    return Sighting(
        found=True,
        won=claim.won,
        status=claim.status,
        has_next_execution=document.get("nextExecutionId") is not None,
    )
