"""Seed 000's timeout mechanism: when an execution starts processing, a deadline message goes
into ``Q.deadline.<timeout>``; when it expires into ``Q.timeouts``, the listener fails the
execution if, and only if, it is still processing under the same claim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import structlog
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel

from tracker.constants import deadline_queue_name
from tracker.consumer import TaskContext
from tracker.middleware import Middleware

log = structlog.get_logger("tracker.deadlines")


def deadline_body(execution_id: str, claim_token: str) -> bytes:
    return json.dumps({"executionId": execution_id, "claimToken": claim_token}).encode()


def read_deadline(body: bytes) -> tuple[str, str] | None:
    """(executionId, claimToken) of a deadline message, None if it is not one."""
    try:
        data = json.loads(body)
        return str(data["executionId"]), str(data["claimToken"])
    except (ValueError, KeyError, TypeError):
        return None


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
        channel: Callable[[], AbstractChannel | None],
        timeouts: dict[str, float],
        defer: float = 1.0,
    ):
        self._channel = channel
        self._timeouts = timeouts
        self._defer = defer
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def delay_for(self, queue: str) -> float:
        return min(self._defer, self._timeouts[queue] / 2)

    async def after_claim(self, task: TaskContext) -> None:
        token = task.execution.claim_token
        if token is None or task.queue not in self._timeouts:
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
        channel = self._channel()
        if channel is None:
            return
        timeout_ms = round(self._timeouts[task.queue] * 1000)
        remaining_ms = max(timeout_ms - round(self.delay_for(task.queue) * 1000), 0)
        try:
            await channel.default_exchange.publish(
                Message(
                    deadline_body(task.execution_id, token),
                    delivery_mode=DeliveryMode.PERSISTENT,
                    message_id=f"deadline:{task.execution_id}",
                    expiration=remaining_ms / 1000,
                ),
                routing_key=deadline_queue_name(task.queue, timeout_ms),
            )
        except Exception as exc:
            log.warning("deadline not published; the sweeper covers it", error=str(exc))
