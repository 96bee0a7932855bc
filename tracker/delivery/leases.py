"""Keeping a claim alive while its handler runs, and noticing when it is lost.

The lease is renewed every third of its length. A timer, not a task, waits for the first
renewal: most handlers finish before it is due, and then nothing was spent on them. When a
renewal finds the claim gone (timed out, taken over), the handler is cancelled: its outcome
would be refused anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from pymongo.errors import PyMongoError

from tracker.store.leases import renew_lease

log = structlog.get_logger("tracker.leases")


class Heartbeat:
    """Renews the lease of ``execution_id`` held by ``token`` until ``stop()``;
    ``on_lost`` is called once if the claim is lost."""

    def __init__(
        self,
        execution_id: str,
        token: str,
        lease: float,
        on_lost: Callable[[], None],
        task_id: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.task_id = task_id
        self.token = token
        self.lease = lease
        self.on_lost = on_lost
        self.lost = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.lease / 3, self._beat)

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        renewal = self._renewal
        if renewal is not None and not renewal.done() and renewal is not asyncio.current_task():
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    def _beat(self) -> None:
        self._renewal = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        try:
            held = await renew_lease(
                self.execution_id, self.token, self.lease, task_id=self.task_id
            )
        except PyMongoError as error:
            # MongoDB may be back before the lease ends: keep trying at the usual pace.
            log.warning("lease renewal failed", error=str(error))
            held = True
        if self._stopped:
            # PyMongo may swallow the stop's cancellation and let the renewal complete.
            return
        if held:
            self.start()
            return
        self.lost = True
        self.on_lost()
