"""A background job run every ``interval`` seconds on the event loop, stopped by cancelling."""

from __future__ import annotations

import asyncio
import contextlib

# How long ``stop()`` waits before cancelling again a job that did not stop.
RECANCEL_SECONDS = 0.5


class Periodic:
    """Subclasses define ``tick()``; ``start()`` runs it now and then every ``interval``
    seconds until ``stop()``. An exception in a tick is the subclass's to handle.

    PyMongo's async client now and then swallows a cancellation that arrives during an
    operation, which then completes as if nothing had happened (about 2 in 100 cancels
    of a ``count_documents`` against a server, measured). A job whose stop was swallowed
    so would sleep and tick on, and ``stop()`` would wait for ever: so the job also stops
    after any tick during which it was cancelled, and ``stop()`` cancels it again until it
    has."""

    name = "tracker-periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=RECANCEL_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def _run(self) -> None:
        this = asyncio.current_task()
        while True:
            await self.tick()
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval)
