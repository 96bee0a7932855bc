"""A background job run every ``interval`` seconds on the event loop, stopped by cancelling."""

from __future__ import annotations

import asyncio
import contextlib


class Periodic:
    """Subclasses define ``tick()``; ``start()`` runs it now and then every ``interval``
    seconds until ``stop()``. An exception in a tick is the subclass's to handle."""

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)
