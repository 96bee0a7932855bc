"""Helpers for testing code that uses the tracker: a middleware that records what happened,
a MongoDB outage for the in-memory store, and structlog's ``capture_logs``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator, MutableMapping
from typing import Any

import structlog
from mongomock_motor import AsyncMongoMockCollection
from pymongo.errors import AutoReconnect
from structlog.testing import capture_logs as _capture_logs

from tracker.consumer import TaskContext
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope
from tracker.lifecycle import ErrorCategory
from tracker.middleware import Middleware
from tracker.models import TaskTracker
from tracker.store import connection

__all__ = ["RecordingMiddleware", "capture_logs", "store_failure", "store_outage"]


@contextlib.contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog's ``capture_logs`` with the context the tracker binds (queue, task_id,
    execution_id, retry_count) merged into each captured entry, at every level whatever the
    configured one."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
    try:
        with _capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


class RecordingMiddleware(Middleware):
    """Records every hook call in order (``events``: hook name and execution or queue),
    counts them (``counts["on_duplicate"]``; failures as ``on_retry``/``on_dead_letter``),
    counts settled outcomes (``outcomes["completed"]``), and lets a test wait for outcomes.
    Safe to use from any thread and event loop (the pika adapter runs hooks on its own)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _note(self, hook: str, subject: str, outcome: str | None = None) -> None:
        with self._lock:
            self.counts[hook] += 1
            self.events.append((hook, subject))
            if outcome is not None:
                self.outcomes[outcome] += 1

    def hooks_for(self, subject: str) -> list[str]:
        """The hooks called for one execution (or queue), in order."""
        with self._lock:
            return [hook for hook, about in self.events if about == subject]

    async def before_process(self, envelope: Envelope) -> None:
        self._note("before_process", _delivered(envelope))

    async def after_claim(self, task: TaskContext) -> None:
        self._note("after_claim", task.execution_id)

    async def after_handler(self, task: TaskContext, error: BaseException | None) -> None:
        self._note("after_handler", task.execution_id)

    async def on_abandoned(self, task: TaskContext) -> None:
        self._note("on_abandoned", task.execution_id)

    async def after_outcome(self, task: TaskContext, decision: Decision) -> None:
        self._note("after_outcome", task.execution_id)

    async def before_ack(self, envelope: Envelope, decision: Decision) -> None:
        self._note("before_ack", _delivered(envelope), decision.outcome)

    async def on_duplicate(self, envelope: Envelope, execution: TaskTracker) -> None:
        self._note("on_duplicate", execution.execution_id)

    async def on_rejected(self, envelope: Envelope, reason: str) -> None:
        self._note("on_rejected", _delivered(envelope))

    async def on_failure(
        self, task: TaskContext, category: ErrorCategory, retried: bool, error: BaseException
    ) -> None:
        self._note("on_retry" if retried else "on_dead_letter", task.execution_id)

    async def on_store_unavailable(self, envelope: Envelope, error: Exception) -> None:
        self._note("on_store_unavailable", _delivered(envelope))

    async def on_enqueued(self, queue: str, execution: TaskTracker, deduplicated: bool) -> None:
        self._note("on_enqueued", execution.execution_id)

    async def on_archived(self, queue: str, count: int) -> None:
        self._note("on_archived", queue)

    async def wait_for(self, timeout: float = 20.0, **outcomes: int) -> None:
        """Wait until at least the given number of each outcome was settled
        (``wait_for(completed=3, dead_lettered=1)``)."""
        async with asyncio.timeout(timeout):
            while not self._reached(outcomes):
                await asyncio.sleep(0.01)

    def _reached(self, outcomes: dict[str, int]) -> bool:
        with self._lock:
            return all(self.outcomes[name] >= n for name, n in outcomes.items())


def _delivered(envelope: Envelope) -> str:
    return envelope.message_id or "?"


STORE_METHODS = (
    "find",
    "find_one",
    "find_one_and_update",
    "bulk_write",
    "update_one",
    "update_many",
    "insert_one",
    "delete_one",
    "delete_many",
    "count_documents",
    "aggregate",
)


@contextlib.contextmanager
def store_failure(
    error: BaseException,
    methods: Iterable[str] = STORE_METHODS,
    times: int | None = None,
    *,
    applied: bool = False,
) -> Iterator[None]:
    """Make operations of the in-memory MongoDB (``methods``: collection method names) raise
    ``error`` until the block ends, or only the first ``times`` calls. For testing how code
    meets a transient error (``AutoReconnect``) or a permanent one (``WriteError``).

    ``applied``: each failing write is carried out first and then raises, as a write whose
    write concern was not met, or whose reply was lost with the connection, does (a read,
    ``find`` or ``aggregate``, just raises)."""
    if not connection.is_in_memory():
        raise RuntimeError("store_failure() works on the in-memory MongoDB only")
    names = list(methods)
    originals = {name: getattr(AsyncMongoMockCollection, name) for name in names}
    left = {"calls": times}

    def failing(name: str) -> Any:
        original = originals[name]

        def fail(*args: Any, **kwargs: Any) -> Any:
            if left["calls"] is not None:
                if left["calls"] <= 0:
                    return original(*args, **kwargs)
                left["calls"] -= 1
            if applied:
                result = original(*args, **kwargs)
                if inspect.isawaitable(result):
                    return _then_raise(result, error)
            raise error

        return fail

    try:
        for name in names:
            setattr(AsyncMongoMockCollection, name, failing(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(AsyncMongoMockCollection, name, original)


async def _then_raise(operation: Awaitable[Any], error: BaseException) -> Any:
    await operation
    raise error


@contextlib.contextmanager
def store_outage() -> Iterator[None]:
    """Make every operation on the in-memory MongoDB fail as an unreachable server does
    (``AutoReconnect``) until the block ends."""
    with store_failure(AutoReconnect("simulated outage: MongoDB could not be reached")):
        yield
