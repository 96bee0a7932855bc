"""Middleware: one documented no-op hook per step of a message's life. Subclass and override
what you need; metrics and the test crash points are middleware. Hooks run in the worker's
event loop; an exception in a hook propagates like one in the tracker itself."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.consumer import TaskContext
    from tracker.delivery.decision import Decision
    from tracker.delivery.envelope import Envelope
    from tracker.lifecycle import ErrorCategory
    from tracker.models import TaskTracker


class Middleware:
    async def before_process(self, envelope: Envelope) -> None:
        """A delivery arrived; nothing has been read or written yet."""

    async def after_claim(self, task: TaskContext) -> None:
        """The execution is claimed (processing) and its handler is about to run."""

    async def after_handler(self, task: TaskContext, error: BaseException | None) -> None:
        """The handler returned (``error`` None) or raised; no outcome is written yet."""

    async def on_abandoned(self, task: TaskContext) -> None:
        """The handler was cancelled (the worker is stopping or dying); no outcome follows and
        the delivery is left unacked for redelivery."""

    async def after_outcome(self, task: TaskContext, decision: Decision) -> None:
        """The outcome is durable in MongoDB; follow-up messages are not yet published and
        the delivery is not yet acknowledged."""

    async def before_ack(self, envelope: Envelope, decision: Decision) -> None:
        """Follow-up messages are confirmed by the broker; the delivery is about to be acked
        (or requeued, when ``decision.requeue``)."""

    async def on_duplicate(self, envelope: Envelope, execution: TaskTracker) -> None:
        """A delivery of an execution that is finished or held under a live claim: acked
        and skipped, its handler not run."""

    async def on_rejected(self, envelope: Envelope, reason: str) -> None:
        """A delivery that breaks the message contract was dead-lettered (``validation``)."""

    async def on_failure(
        self, task: TaskContext, category: ErrorCategory, retried: bool, error: BaseException
    ) -> None:
        """An attempt failed; ``retried`` tells whether a retry was scheduled or the task went
        to the dead-letter queue."""

    async def on_store_unavailable(self, envelope: Envelope, error: Exception) -> None:
        """MongoDB did not answer; the delivery is requeued after a short delay."""

    async def on_enqueued(self, queue: str, execution: TaskTracker, deduplicated: bool) -> None:
        """A publisher created an execution (or found an active one: ``deduplicated``)."""

    async def on_archived(self, queue: str, count: int) -> None:
        """``count`` dead letters of ``queue`` were archived by this process."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Hooks:
    """The hooks of ``middleware`` that do something, looked up once: ``await
    hooks.run("after_claim", task)`` calls, in order, each middleware's ``after_claim`` that
    overrides the base class's no-op. A hook left as the no-op is not called at all (most
    middleware overrides two or three of a dozen hooks, and each call is a coroutine made
    and awaited for every delivery)."""

    __slots__ = ("_bound",)

    def __init__(self, middleware: tuple[Middleware, ...] = ()) -> None:
        self._bound: dict[str, tuple[Callable[..., Awaitable[None]], ...]] = {
            hook: tuple(getattr(item, hook) for item in middleware if _overrides(item, hook))
            for hook in HOOKS
        }

    async def run(self, hook: str, *args: Any) -> None:
        for call in self._bound[hook]:
            await call(*args)

    def wants(self, hook: str) -> bool:
        """Whether any middleware does something at ``hook`` (so that its arguments are
        worth making)."""
        return bool(self._bound[hook])


# Every hook of ``Middleware``: its public coroutine methods.
HOOKS = tuple(
    name
    for name, value in vars(Middleware).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(value)
)


def _overrides(item: Middleware, hook: str) -> bool:
    return getattr(type(item), hook) is not getattr(Middleware, hook)
