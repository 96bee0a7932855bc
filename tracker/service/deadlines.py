"""The report service's timeout mechanism, for every queue: when an execution starts
processing, a deadline message goes into ``Q.deadline.<timeout>``; when it expires into
``Q.timeouts``, the listener fails the execution if, and only if, it is still processing
under the same claim. Transport-neutral: messages go through a ``Transport``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

import structlog

from tracker.constants import deadline_queue_name
from tracker.consumer import TaskContext
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.errors import PublishError, StoreUnavailableError
from tracker.middleware import Middleware
from tracker.store.errors import is_transient
from tracker.transport import Delivery, Transport
from tracker.validation import id_problem

log = structlog.get_logger("tracker.deadlines")


def deadline_body(execution_id: str, claim_token: str) -> bytes:
    return json.dumps({"executionId": execution_id, "claimToken": claim_token}).encode()


def read_deadline(body: bytes) -> tuple[str, str] | None:
    """(executionId, claimToken) of a deadline message, None if it is not one (both must be
    ids: anything else could never name an execution, and would come back for ever)."""
    try:
        data = json.loads(body)
        execution_id, token = data["executionId"], data["claimToken"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if id_problem(execution_id) is not None or id_problem(token) is not None:
        return None
    return execution_id, token


class DeadlineMiddleware(Middleware):
    """Publishes the deadline of every claimed execution whose handler is still running
    ``defer`` seconds after the claim (default: a second, or half the timeout if shorter).

    Handlers that finish sooner, most of them, need no deadline, which saves a publish per
    message. A deferred deadline carries a per-message expiration of ``timeout - defer``, so it
    still fires at claim + timeout; as every deadline of a queue is deferred by the same
    amount, they still expire in queue order. The publish is not confirmed: a lost deadline,
    or one never sent because the worker hung within ``defer``, is covered by the sweeper.
    """

    def __init__(
        self,
        transport: Callable[[], Transport | None],
        timeouts: Mapping[str, float],
        defer: float = 1.0,
    ):
        self._transport = transport
        self._timeouts = dict(timeouts)
        self._defer = defer
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def delay_for(self, queue: str) -> float:
        return min(self._defer, self._timeouts[queue] / 2)

    async def after_claim(self, task: TaskContext) -> None:
        token = task.record.get("claimToken")
        if not isinstance(token, str) or task.queue not in self._timeouts:
            return
        loop = asyncio.get_running_loop()
        self._pending[task.execution_id] = loop.call_later(
            self.delay_for(task.queue), self._spawn, task, token
        )

    async def after_handler(self, task: TaskContext, error: BaseException | None) -> None:
        self._cancel(task.execution_id)

    async def on_abandoned(self, task: TaskContext) -> None:
        self._cancel(task.execution_id)

    def _cancel(self, execution_id: str) -> None:
        handle = self._pending.pop(execution_id, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, task: TaskContext, token: str) -> None:
        self._pending.pop(task.execution_id, None)
        publishing = asyncio.get_running_loop().create_task(self._publish(task, token))
        self._tasks.add(publishing)
        publishing.add_done_callback(self._tasks.discard)

    async def _publish(self, task: TaskContext, token: str) -> None:
        transport = self._transport()
        if transport is None:
            return
        timeout_ms = round(self._timeouts[task.queue] * 1000)
        remaining_ms = max(timeout_ms - round(self.delay_for(task.queue) * 1000), 0)
        message = OutgoingMessage(
            routing_key=deadline_queue_name(task.queue, timeout_ms),
            body=deadline_body(task.execution_id, token),
            headers={},
            message_id=f"deadline:{task.execution_id}",
            correlation_id=task.task_id,
            expiration=remaining_ms / 1000,
        )
        try:
            await transport.publish(message, confirm=False)
        except Exception as exc:
            log.warning("deadline not published; the sweeper covers it", error=str(exc))


class DeadlineListener:
    """Consumes ``Q.timeouts``: fails the execution a deadline names if it still runs under
    the same claim, publishes what follows, then acks the deadline."""

    def __init__(self, outcomes: Outcomes, transport: Transport, requeue_delay: float) -> None:
        self.outcomes = outcomes
        self.transport = transport
        self.requeue_delay = requeue_delay

    async def on_delivery(self, delivery: Delivery) -> None:
        queue = self.outcomes.rules.queue
        deadline = read_deadline(delivery.envelope.body)
        if deadline is None:
            log.warning("not a deadline message; dropped", queue=queue)
            await delivery.ack()
            return
        try:
            decision = await self.outcomes.expire(*deadline)
            for outgoing in decision.publish if decision else ():
                await self.transport.publish(outgoing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _passing(exc):
                # It would fail the same way every time: the sweeper fails the execution
                # once it is past its deadline.
                log.error(
                    "deadline not applied, or what follows it not published; dropped, the "
                    "sweeper covers it",
                    queue=queue,
                    execution_id=deadline[0],
                    error=type(exc).__name__,
                )
                await _quietly(delivery.ack)
                return
            log.warning("deadline not applied; requeued", error=str(exc))
            await asyncio.sleep(self.requeue_delay)
            await _quietly(delivery.requeue)
            return
        # "stale": the attempt had already ended (failed under its claim, the retry made
        # sure of): nothing timed out now.
        if decision is not None and decision.outcome != "stale":
            log.warning(
                "execution timed out",
                queue=queue,
                execution_id=deadline[0],
                outcome=decision.outcome,
            )
        await _quietly(delivery.ack)


def _passing(error: Exception) -> bool:
    """Whether trying again later can succeed: MongoDB or the broker out of reach for now
    (not a message the broker refused to route: that would be refused again)."""
    if isinstance(error, PublishError):
        return error.maybe_published
    return isinstance(error, StoreUnavailableError) or is_transient(error)


async def _quietly(settle: Callable[[], Awaitable[None]]) -> None:
    try:
        await settle()
    except Exception as exc:
        log.warning("could not settle a deadline", error=str(exc))
