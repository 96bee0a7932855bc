"""Helpers for testing code that uses the tracker: a middleware that records what happened,
a MongoDB outage for the in-memory store, and structlog's ``capture_logs``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, MutableMapping
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

__all__ = ["RecordingMiddleware", "capture_logs", "store_outage"]


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
    """Counts every hook call (``counts["on_duplicate"]``), keeps the decisions, and lets a
    test wait for a number of outcomes."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    async def _note(self, hook: str) -> None:
        self.counts[hook] += 1
        async with self._changed:
            self._changed.notify_all()

    async def before_process(self, envelope: Envelope) -> None:
        await self._note("before_process")

    async def after_claim(self, task: TaskContext) -> None:
        await self._note("after_claim")

    async def before_ack(self, envelope: Envelope, decision: Decision) -> None:
        self.outcomes[decision.outcome] += 1
        await self._note("before_ack")

    async def on_duplicate(self, envelope: Envelope, execution: TaskTracker) -> None:
        await self._note("on_duplicate")

    async def on_rejected(self, envelope: Envelope, reason: str) -> None:
        await self._note("on_rejected")

    async def on_failure(
        self, task: TaskContext, category: ErrorCategory, retried: bool, error: BaseException
    ) -> None:
        await self._note("on_retry" if retried else "on_dead_letter")

    async def on_store_unavailable(self, envelope: Envelope, error: Exception) -> None:
        await self._note("on_store_unavailable")

    async def wait_for(self, timeout: float = 20.0, **outcomes: int) -> None:
        """Wait until at least the given number of each outcome was settled
        (``wait_for(completed=3, dead_lettered=1)``)."""

        def reached() -> bool:
            return all(self.outcomes[name] >= n for name, n in outcomes.items())

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(reached)


@contextlib.contextmanager
def store_outage() -> Iterator[None]:
    """Make every operation on the in-memory MongoDB fail as an unreachable server does
    (``AutoReconnect``) until the block ends."""
    if not connection.is_in_memory():
        raise RuntimeError("store_outage() works on the in-memory MongoDB only")
    names = [
        "find",
        "find_one",
        "find_one_and_update",
        "update_one",
        "update_many",
        "insert_one",
        "delete_one",
        "delete_many",
        "count_documents",
        "aggregate",
    ]
    originals = {name: getattr(AsyncMongoMockCollection, name) for name in names}

    def failing(name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise AutoReconnect(f"simulated outage: {name} could not reach MongoDB")

        return fail

    try:
        for name in names:
            setattr(AsyncMongoMockCollection, name, failing(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(AsyncMongoMockCollection, name, original)
