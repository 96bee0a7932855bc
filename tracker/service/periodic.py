"""A background job run every ``interval`` seconds on the event loop, stopped by cancelling."""

from __future__ import annotations

import asyncio

from tracker.service.cancelling import cancel_and_wait


class Periodic:
    """Subclasses define ``tick()``; ``start()`` runs it now and then every ``interval``
    seconds until ``stop()``. An exception in a tick is the subclass's to handle.

    A job whose stop PyMongo swallowed (``tracker.service.cancelling``) would sleep and tick
    on, and ``stop()`` would wait for ever: so the job also ends after any tick during which
    it was cancelled, and ``stop()`` cancels it again until it has."""

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
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait([task])
        if not task.cancelled():
            task.result()  # a tick's own error, as before

    async def _run(self) -> None:
        this = asyncio.current_task()
        while True:
            await self.tick()
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval)
