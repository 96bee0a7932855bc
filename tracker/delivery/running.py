"""Running a handler: started at once, and, when it waits for anything, as a task of its own
under its timeout, with every way it can end mapped to exactly one result, so that the
processor records one outcome whatever the handler does.

| the handler...                                   | result                                   |
|--------------------------------------------------|------------------------------------------|
| returns                                          | ``Returned``                             |
| raises an ``Exception``                          | ``Raised`` (classified by the outcome)   |
| raises ``GeneratorExit`` or another non-Exception | ``Raised(HandlerEscape)``, ``unknown``   |
| raises a ``CancelledError`` nobody asked for     | ``Raised(HandlerEscape)``, ``unknown``   |
| outlives its timeout (cancelled, even if ignored) | ``Raised(TaskTimeout)``                 |
| raises ``KeyboardInterrupt`` or ``SystemExit``   | ``Interrupted``: no failure, worker stops |
| is cancelled because its claim was lost          | ``ClaimLost``                            |

A handler that ignores cancellation is left running after ``CANCEL_GRACE`` seconds: the
worker does not wait for it, and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context
from dataclasses import dataclass
from typing import Any

import structlog

from tracker.consumer import TaskContext
from tracker.errors import HandlerEscape, HandlerInterrupt, TaskTimeout

log = structlog.get_logger("tracker.running")

# How long a cancelled handler gets to stop before the worker goes on without it.
CANCEL_GRACE = 1.0

Handler = Callable[[TaskContext], Awaitable[Any]]


@dataclass(frozen=True)
class Returned:
    value: Any


@dataclass(frozen=True)
class Raised:
    error: Exception


@dataclass(frozen=True)
class Interrupted:
    interrupt: HandlerInterrupt


@dataclass(frozen=True)
class ClaimLost:
    """The claim was lost while the handler ran: its outcome would be refused."""


Ran = Returned | Raised | Interrupted | ClaimLost


class HandlerRun:
    """One run of ``handler`` for ``task``; ``claim_lost`` tells whether a cancellation came
    from losing the claim."""

    def __init__(self, handler: Handler, task: TaskContext, claim_lost: Callable[[], bool]):
        self.handler = handler
        self.task = task
        self.claim_lost = claim_lost
        self.future: asyncio.Task[Any] | None = None
        self.abandoned = False

    def cancel(self) -> None:
        """Stop the handler (the claim was lost)."""
        if self.future is not None:
            self.future.cancel()

    async def run(self, limit: float, timeout_text: str) -> Ran:
        """Run the handler for at most ``limit`` seconds. A cancellation of the caller (the
        worker stopping) cancels the handler, waits ``CANCEL_GRACE`` at most, and
        propagates; ``abandoned`` then says whether the handler was left running."""
        started = _start(_guarded(self.handler, self.task))
        if not isinstance(started, _Suspended):
            return started
        loop = asyncio.get_running_loop()
        self.future = handler_task = loop.create_task(started.resume(), context=started.context)
        try:
            done, _ = await asyncio.wait({handler_task}, timeout=limit)
        except asyncio.CancelledError:
            await self._stop(handler_task)
            raise
        if not done:
            await self._stop(handler_task)
            return Raised(TaskTimeout(timeout_text))
        if handler_task.cancelled():
            return ClaimLost() if self.claim_lost() else Raised(_cancelled_by_nobody())
        error = handler_task.exception()
        if error is None:
            return Returned(handler_task.result())
        if isinstance(error, HandlerInterrupt):
            return Interrupted(error)
        assert isinstance(error, Exception), "_guarded turns every BaseException into one"
        return Raised(error)

    async def _stop(self, handler_task: asyncio.Task[Any]) -> None:
        handler_task.cancel()
        # asyncio.wait does not pass a cancellation on to the task it waits for.
        await asyncio.wait({handler_task}, timeout=CANCEL_GRACE)
        if not handler_task.done():
            self.abandoned = True
            self.task.log.warning(
                "handler ignores cancellation: left running, its claim to expire",
                grace_seconds=CANCEL_GRACE,
            )


class _Suspended:
    """A handler coroutine whose first step ran and waits for ``yielded`` (a future, or
    nothing for a bare yield); ``resume()`` goes on with it in a task, as if the task had run
    the first step itself."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], yielded: Any, context: Context):
        self.coroutine = coroutine
        self.yielded = yielded
        self.context = context

    async def resume(self) -> Any:
        return await self

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, step = self.coroutine, self.yielded
        try:
            while True:
                try:
                    sent = yield step
                except BaseException as thrown:  # a cancellation, thrown in by the task
                    step = coroutine.throw(thrown)
                else:
                    step = coroutine.send(sent)
        except StopIteration as done:
            return done.value


def _start(coroutine: Coroutine[Any, Any, Any]) -> Ran | _Suspended:
    """Run the handler's first step here, in a context of its own: a handler that does not
    wait for anything (most of them, at a fast queue) ends in it and needs no task, no
    timer and no wakeup (what Python 3.12 calls an eager task). One that waits goes on in a
    task of its own (``_Suspended``), under the timeout."""
    context = contextvars.copy_context()
    try:
        yielded = context.run(coroutine.send, None)
    except StopIteration as done:
        return Returned(done.value)
    except HandlerInterrupt as interrupt:
        return Interrupted(interrupt)
    except Exception as error:
        return Raised(error)
    return _Suspended(coroutine, yielded, context)


async def _guarded(handler: Handler, task: TaskContext) -> Any:
    """The handler, with what must not escape into the event loop turned into exceptions:
    ``KeyboardInterrupt``/``SystemExit`` would stop the loop itself, and other
    non-``Exception`` errors have no outcome of their own.

    Every log line the handler writes, through any structlog logger, carries the task's
    identity: bound in the handler's own context (``_start``), which ends with it."""
    structlog.contextvars.bind_contextvars(
        queue=task.queue,
        task_id=task.task_id,
        execution_id=task.execution_id,
        retry_count=task.retry_count,
    )
    try:
        return await handler(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # asked for: timeout, lost claim, or the worker stopping
        raise _cancelled_by_nobody() from None
    except (KeyboardInterrupt, SystemExit) as interrupt:
        raise HandlerInterrupt(interrupt) from interrupt
    except Exception:
        raise
    except BaseException as escape:
        raise HandlerEscape(escape) from escape


def _cancelled_by_nobody() -> HandlerEscape:
    return HandlerEscape(asyncio.CancelledError(), "handler raised CancelledError")
