"""Enqueueing, for both publishers (aio-pika and pika): create the execution, publish its
message on a ``Transport`` with the broker's confirm, and settle a publish that failed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pymongo
import structlog
from pymongo.errors import ServerSelectionTimeoutError, WaitQueueTimeoutError

from tracker.clock import new_execution_id, random_uuid, utcnow
from tracker.constants import MAX_PAYLOAD_BYTES
from tracker.delivery.envelope import (
    OutgoingMessage,
    encode_payload,
    encode_stored_payload,
    task_message,
)
from tracker.errors import PublishError
from tracker.lifecycle import TaskStatus
from tracker.middleware import Hooks, Middleware
from tracker.store import connection
from tracker.store.creation import (
    Created,
    NewExecution,
    create_execution,
    create_executions,
)
from tracker.store.errors import describe, is_store_error, is_transient
from tracker.store.group_commit import GroupCommit
from tracker.transport import Transport
from tracker.validation import check_queue

log = structlog.get_logger("tracker.publisher")


@dataclass(frozen=True)
class EnqueueResult:
    """``deduplicated``: the task already had an active execution (or a completion within
    the dedupe window); nothing was published and ``execution_id`` is that execution's."""

    task_id: str
    execution_id: str
    deduplicated: bool
    status: TaskStatus


class Enqueuer:
    """Enqueueing on one transport, for both publishers: create the execution (or find the
    active one), declare the queue once, publish with the broker's confirm.

    A publish that fails is settled by what the broker may hold. Certainly nothing (the queue
    could not be declared, the message came back unroutable): the execution is removed again
    and enqueueing again is safe. Maybe the message (a lost confirm, a nack, the connection
    lost while waiting): the execution is kept, marked ``publishUnconfirmedAt``, so that the
    message, if it arrives, runs as that execution; the sweeper publishes it again if it never
    does, and so does an ``enqueue`` of the same task now. Either way ``PublishError`` is
    raised with the task and execution ids.
    """

    def __init__(
        self,
        transport: Transport,
        middleware: tuple[Middleware, ...] = (),
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.transport = transport
        self.hooks = Hooks(middleware)
        self.max_payload_bytes = max_payload_bytes
        self._declared: set[str] = set()
        # The executions of concurrent enqueues are created together.
        self.creations: GroupCommit[NewExecution, Created] = GroupCommit(
            create_executions, on_abandoned=self._abandoned
        )
        self._markings: set[asyncio.Task[None]] = set()

    async def enqueue(
        self,
        queue: str,
        payload: Any,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_retries: int | None = None,
        dedupe_window: float | timedelta | None = None,
    ) -> EnqueueResult:
        connection.warn_if_private()
        result, message, resend = await self._prepare(
            queue, payload, task_id, metadata, max_retries, dedupe_window
        )
        if message is None:
            return result
        try:
            if queue not in self._declared:
                await self.transport.declare_work_queue(queue)
                self._declared.add(queue)
        except Exception as exc:
            raise await _unpublished(queue, result, exc, remove=not resend) from exc
        try:
            await self.transport.publish(message)
        except PublishError as exc:
            remove = not exc.maybe_published and not resend
            raise await _unpublished(queue, result, exc, remove=remove) from exc
        if resend:
            await _confirmed(result.task_id, result.execution_id)
        return result

    async def _prepare(
        self,
        queue: str,
        payload: Any,
        task_id: str | None,
        metadata: dict[str, Any] | None,
        max_retries: int | None,
        dedupe_window: float | timedelta | None,
    ) -> tuple[EnqueueResult, OutgoingMessage | None, bool]:
        """Create the queued execution: the result, the message to publish (None when
        deduplicated), and whether that message is a resend of an active execution whose
        earlier publish was not confirmed."""
        check_queue(queue)
        new = NewExecution(
            f"{queue}:{random_uuid()}" if task_id is None else task_id,
            queue,
            payload,
            # Known before the write, so that a write which may have been applied can be
            # marked (``_maybe_stored``).
            execution_id=new_execution_id(),
            max_retries=max_retries,
            metadata=metadata,
        ).checked()
        # Fail before anything is written if the store is not connected or not indexed.
        connection.require_indexes()
        body = encode_payload(payload, self.max_payload_bytes)
        try:
            if dedupe_window is None:
                created = await self.creations.submit(new)
            else:
                created = await create_execution(
                    new.task_id,
                    queue,
                    payload,
                    execution_id=new.execution_id,
                    metadata=new.metadata,
                    max_retries=max_retries,
                    dedupe_window=dedupe_window,
                )
        except Exception as error:
            if is_transient(error) and not isinstance(error, NEVER_SENT):
                await _maybe_stored(new, describe(error))
            raise
        if self.hooks.wants("on_enqueued"):
            await self.hooks.run("on_enqueued", queue, created.execution, created.deduplicated)
        stored = created.document
        result = EnqueueResult(
            task_id=stored["taskId"],
            execution_id=stored["executionId"],
            deduplicated=created.deduplicated,
            status=TaskStatus(stored["status"]),
        )
        resend = created.deduplicated and stored.get("publishUnconfirmedAt") is not None
        if created.deduplicated and not resend:
            log.info(
                "enqueue deduplicated", task_id=result.task_id, execution_id=result.execution_id
            )
            return result, None, False
        message = task_message(
            queue,
            encode_stored_payload(stored.get("payload")) if resend else body,
            task_id=result.task_id,
            execution_id=result.execution_id,
            retry_count=stored.get("retryCount", 0),
            max_retries=stored.get("maxRetries"),
        )
        return result, message, resend

    def _abandoned(self, new: NewExecution, created: Created) -> None:
        """An enqueue cancelled (its caller's timeout) while its execution was written: the
        execution is stored and nobody will publish it; marked, the next enqueue of the task
        does, and the sweeper soon."""
        if created.deduplicated:
            return
        marking = asyncio.get_running_loop().create_task(
            _maybe_stored(new, "the enqueue was cancelled while its execution was written")
        )
        self._markings.add(marking)
        marking.add_done_callback(self._markings.discard)

    async def enqueue_again(
        self,
        failed: PublishError,
        queue: str,
        payload: Any,
        metadata: dict[str, Any] | None = None,
        max_retries: int | None = None,
        dedupe_window: float | timedelta | None = None,
    ) -> EnqueueResult:
        """Enqueue again after ``failed``, a publish lost with its connection: the execution
        it kept is published again (a copy that did arrive is a duplicate, skipped), and
        reported as this enqueue's own, not as deduplicated."""
        result = await self.enqueue(
            queue, payload, failed.task_id, metadata, max_retries, dedupe_window
        )
        if result.execution_id == failed.execution_id:
            return replace(result, deduplicated=False)
        return result


async def _unpublished(
    queue: str, result: EnqueueResult, cause: BaseException, *, remove: bool
) -> PublishError:
    """Settle an execution whose message the broker did not confirm; the error to raise."""
    task_id, execution_id = result.task_id, result.execution_id
    if remove:
        await connection.collection().delete_one(
            {"taskId": task_id, "executionId": execution_id, "status": TaskStatus.QUEUED.value}
        )
        return PublishError(
            f"the broker did not accept the message for {queue!r} ({cause}); the execution "
            f"{result.execution_id} was rolled back, enqueueing again is safe",
            maybe_published=False,
            task_id=task_id,
            execution_id=execution_id,
        )
    now = utcnow()
    await connection.collection().update_one(
        {"taskId": task_id, "executionId": execution_id, "status": TaskStatus.QUEUED.value},
        {"$set": {"publishUnconfirmedAt": now, "updatedAt": now}},
    )
    return PublishError(
        f"the broker did not confirm the message for {queue!r} ({cause}); the execution "
        f"{result.execution_id} is kept and will be published again (enqueueing again "
        "retries now)",
        task_id=task_id,
        execution_id=execution_id,
    )


# Errors raised before the write left this process: nothing can have been applied.
NEVER_SENT = (ServerSelectionTimeoutError, WaitQueueTimeoutError)
# The marking is a courtesy to the next enqueue: it must not double the time a failing
# enqueue takes to fail.
MARKING_TIMEOUT_SECONDS = 2.0


async def _maybe_stored(new: NewExecution, cause: str) -> None:
    """The write of ``new`` may have been applied, and no message will follow it (``cause``:
    a write concern not met, the reply lost with the connection, the enqueue cancelled).
    Stored and unmarked, it would wait in ``queued`` with no message until the sweeper
    presumes it orphaned, and an enqueue of the task tried again meanwhile would take it for
    an active duplicate and publish nothing. Marked as a publish not confirmed, that enqueue
    publishes it, and the sweeper does soon.

    Best effort: a write still running on the server when the marking arrives (its reply
    lost, not its request) is stored unmarked, as is one whose marking fails; the sweeper's
    ``republish_after`` covers those."""
    now = utcnow()
    try:
        with pymongo.timeout(MARKING_TIMEOUT_SECONDS):
            await connection.collection().update_one(
                {
                    "taskId": new.task_id,
                    "executionId": new.execution_id,
                    "status": TaskStatus.QUEUED.value,
                },
                {"$set": {"publishUnconfirmedAt": now, "updatedAt": now}},
            )
    except Exception as marking:
        if not is_store_error(marking):
            raise
        log.warning(
            "an enqueue that did not finish may have left its execution stored unpublished: "
            "the sweeper publishes it once it waited too long",
            task_id=new.task_id,
            execution_id=new.execution_id,
            cause=cause,
            error=describe(marking),
        )


async def _confirmed(task_id: str, execution_id: str) -> None:
    await connection.collection().update_one(
        {"taskId": task_id, "executionId": execution_id},
        {"$unset": {"publishUnconfirmedAt": ""}},
    )
