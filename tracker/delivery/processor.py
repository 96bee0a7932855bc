"""The tracked life of one delivery, free of any transport: read, claim, run, record.

``Processor.process`` reads the delivery (``reading``), claims its execution and decides
what to do (``claiming``), runs the handler under its timeout (``running``), records the
outcome (``outcomes``) and returns a ``Decision``: the messages the transport must publish
with confirms, then whether to ack or requeue. The adapters only carry that decision out
(``settle``), so "outcome durable, then follow-ups published, then ack" holds for every
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import structlog
from pymongo.errors import PyMongoError

from tracker.consumer import TrackedConsumer
from tracker.delivery.claiming import Claimed, Claiming, ProcessorOptions
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope, InvalidMessage, TaskMessage
from tracker.delivery.outcomes import Outcomes
from tracker.delivery.reading import read
from tracker.delivery.rejection import Rejections
from tracker.delivery.running import (
    ClaimLost,
    HandlerRun,
    Interrupted,
    Raised,
    Ran,
    Returned,
)
from tracker.errors import HandlerInterrupt, StaleClaimError
from tracker.lifecycle import ErrorCategory
from tracker.middleware import Hooks, Middleware
from tracker.store.errors import describe, is_store_error, is_transient
from tracker.store.leases import release_claim

log = structlog.get_logger("tracker.processor")

__all__ = ["Claimed", "Processor", "ProcessorOptions"]


class Processor:
    def __init__(
        self,
        consumer: TrackedConsumer,
        options: ProcessorOptions,
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        self.consumer = consumer
        self.options = options
        self.hooks = Hooks(middleware)
        self.outcomes = Outcomes(
            consumer, options.worker_id, middleware, options.store_retry_budget, options.max_batch
        )
        self.rejections = Rejections(consumer.queue, middleware)
        self.claiming = Claiming(consumer, options, middleware, self.outcomes, self.rejections)
        # Cleared only to simulate a crash: a dead process releases nothing.
        self.release_on_cancel = True

    async def process(self, envelope: Envelope) -> Decision:
        """Claim, run the handler, record the outcome."""
        started = await self.begin(envelope)
        if isinstance(started, Decision):
            return started
        try:
            ran = await self.run(started)
        except asyncio.CancelledError:
            await self.abandon(started)
            raise
        return await self.finish(started, ran)

    async def begin(self, envelope: Envelope) -> Claimed | Decision:
        """Read the delivery and claim its execution; a ``Decision`` when there is nothing to
        run (duplicate, rejected, MongoDB down)."""
        await self.hooks.run("before_process", envelope)
        message = read(envelope, self.consumer.max_payload_bytes)
        try:
            return await self.claiming.claim(envelope, message)
        except Exception as error:
            if not is_store_error(error):
                raise
            if is_transient(error):
                return await self._store_unavailable(envelope, error)
            return await self._refused(envelope, message, error)

    async def run(self, claimed: Claimed) -> Ran:
        """Run the handler under the consumer's timeout plus a grace: the deadline listener
        fails the execution at the timeout, the worker stops the handler a little later in
        case it cannot."""
        task = claimed.task
        await self.hooks.run("after_claim", task)
        claimed.handler_run = HandlerRun(self.consumer.handler, task, lambda: claimed.claim_lost)
        limit = self.consumer.timeout + self.options.timeout_grace
        return await claimed.handler_run.run(limit, self.consumer.timeout_text())

    async def finish(self, claimed: Claimed, ran: Ran) -> Decision:
        """Make the outcome of a handler run durable and say what follows."""
        await claimed.heartbeat.stop()
        task = claimed.task
        ended_by = (
            ran.error
            if isinstance(ran, Raised)
            else ran.interrupt.original
            if isinstance(ran, Interrupted)
            else None
        )
        await self.hooks.run("after_handler", task, ended_by)
        if isinstance(ran, Interrupted):
            return await self._interrupted(claimed, ran.interrupt)
        try:
            if claimed.claim_lost or isinstance(ran, ClaimLost):
                decision = Decision("stale", execution_id=task.execution_id)
            elif isinstance(ran, Returned):
                decision = await self.outcomes.complete(
                    task, claimed.token, ran.value, claimed.envelope
                )
            else:
                decision = await self.outcomes.fail(
                    task, claimed.token, ran.error, claimed.envelope
                )
        except StaleClaimError as stale:
            log.warning("outcome refused: the claim was superseded", reason=str(stale))
            decision = Decision("stale", execution_id=task.execution_id)
        except Exception as error:
            if not is_store_error(error):
                raise
            if is_transient(error):
                return await self._store_unavailable(claimed.envelope, error)
            decision = await self._unstorable(claimed, error)
        await self.hooks.run("after_outcome", task, decision)
        return decision

    async def abandon(self, claimed: Claimed) -> None:
        """The handler was cancelled (the worker is stopping): expire the lease, so the
        requeued delivery is taken over at once rather than after the lease, unless the
        handler ignored the cancellation and still runs (then the lease runs out)."""
        await claimed.heartbeat.stop()
        await self.hooks.run("on_abandoned", claimed.task)
        still_running = claimed.handler_run is not None and claimed.handler_run.abandoned
        if self.release_on_cancel and not still_running:
            with contextlib.suppress(PyMongoError, asyncio.CancelledError):
                await release_claim(
                    claimed.task.execution_id, claimed.token, task_id=claimed.task.task_id
                )

    async def _interrupted(self, claimed: Claimed, interrupt: HandlerInterrupt) -> Decision:
        """The handler asked the process to stop: no outcome; the claim is released, and the
        delivery, left unsettled, returns to the queue when the worker's channel closes."""
        claimed.task.log.error("handler interrupted the worker", error=str(interrupt))
        with contextlib.suppress(PyMongoError):
            await release_claim(
                claimed.task.execution_id, claimed.token, task_id=claimed.task.task_id
            )
        return Decision("interrupted", execution_id=claimed.task.execution_id, interrupt=interrupt)

    async def expire(self, execution_id: str, claim_token: str | None) -> Decision | None:
        """See ``Outcomes.expire``."""
        return await self.outcomes.expire(execution_id, claim_token)

    # -- store errors: transient (not now) or permanent (never) ------------------------------

    async def _store_unavailable(self, envelope: Envelope, error: BaseException) -> Decision:
        log.error(
            "MongoDB unavailable: delivery requeued",
            queue=self.consumer.queue,
            error=describe(error),
            requeue_in_seconds=self.options.requeue_delay,
        )
        assert isinstance(error, Exception)
        await self.hooks.run("on_store_unavailable", envelope, error)
        return Decision("store_unavailable", requeue=True, requeue_delay=self.options.requeue_delay)

    async def _refused(
        self, envelope: Envelope, message: TaskMessage | InvalidMessage, error: BaseException
    ) -> Decision:
        """The store refused the delivery's claim for good (before its handler ran): record
        it as a dead letter of its own with the reason, or, when even that cannot be
        stored, park it in the broker's ``.dlq``."""
        refusal = InvalidMessage(
            f"the store refused this delivery: {describe(error)}",
            message.task_id,
            message.execution_id,
        )
        return await self._or_park(
            envelope, self.claiming.reject(envelope, refusal, ErrorCategory.INFRASTRUCTURE)
        )

    async def _unstorable(self, claimed: Claimed, error: BaseException) -> Decision:
        return await self._or_park(
            claimed.envelope, self.outcomes.unstorable(claimed.task, claimed.token, error)
        )

    async def _or_park(self, envelope: Envelope, record: Awaitable[Decision]) -> Decision:
        try:
            return await record
        except Exception as error:
            if not is_store_error(error):
                raise
            if is_transient(error):
                return await self._store_unavailable(envelope, error)
            log.error(
                "nothing of this delivery can be stored: left in the queue's .dlq",
                queue=self.consumer.queue,
                error=describe(error),
            )
            return Decision("parked", park=True)
