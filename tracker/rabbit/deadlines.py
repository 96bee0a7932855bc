"""Seed 000's timeout mechanism: when an execution starts processing, a deadline message goes
into ``Q.deadline.<timeout>``; when it expires into ``Q.timeouts``, the listener fails the
execution if, and only if, it is still processing under the same claim."""

from __future__ import annotations

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
    """Publishes the deadline of every claimed execution. The publish is not confirmed: it
    costs no round trip on the hot path, and a lost deadline is covered by the sweeper."""

    def __init__(self, channel: Callable[[], AbstractChannel | None], timeouts: dict[str, float]):
        self._channel = channel
        self._timeouts = timeouts

    async def after_claim(self, task: TaskContext) -> None:
        channel = self._channel()
        token = task.execution.claim_token
        if channel is None or token is None or task.queue not in self._timeouts:
            return
        routing_key = deadline_queue_name(task.queue, round(self._timeouts[task.queue] * 1000))
        try:
            await channel.default_exchange.publish(
                Message(
                    deadline_body(task.execution_id, token),
                    delivery_mode=DeliveryMode.PERSISTENT,
                    message_id=f"deadline:{task.execution_id}",
                ),
                routing_key=routing_key,
            )
        except Exception as exc:
            log.warning("deadline not published; the sweeper covers it", error=str(exc))
