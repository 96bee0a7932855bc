"""Group commit: the writes of concurrent deliveries gathered into one round trip.

A write submitted while the store is idle goes out on the next turn of the event loop,
together with whatever other deliveries submitted in that turn (a broker hands over
prefetched messages in bursts), so an idle queue waits for nothing. A write submitted while a
batch is in flight waits for it and goes out with the next one: the busier the queue, the
larger the batches, and the round trips per message fall as the load rises.

Each submitter gets its own result or its own error; an error of the whole batch (MongoDB
unreachable) is every submitter's error. A submitter cancelled before its batch leaves is
taken out of it; one cancelled while its batch is in flight is written all the same, and
its result goes to ``on_abandoned`` (nobody else will see it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

# A write of the batch returns, for each request in order, its result or the error that
# refused it alone.
BatchWrite = Callable[[Sequence[Request]], Awaitable[Sequence[Result | BaseException]]]

DEFAULT_MAX_BATCH = 128


class GroupCommit(Generic[Request, Result]):
    """Submits requests to ``write`` in batches of at most ``max_batch``, one batch at a
    time; ``max_batch=1`` writes each request on its own. ``on_abandoned`` gets the request
    and result of a write whose submitter was cancelled while it was in flight."""

    def __init__(
        self,
        write: BatchWrite[Request, Result],
        max_batch: int = DEFAULT_MAX_BATCH,
        on_abandoned: Callable[[Request, Result], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._write = write
        self._on_abandoned = on_abandoned
        self.max_batch = max_batch
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, request: Request) -> Result:
        """Write ``request`` with the next batch; its result, or its error raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((request, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_batches())
        return await future

    async def _write_batches(self) -> None:
        try:
            # One turn of the loop lets the other deliveries of this burst join the batch.
            await asyncio.sleep(0)
            while self._waiting:
                batch = [item for item in self._waiting[: self.max_batch] if not item[1].done()]
                del self._waiting[: self.max_batch]
                if batch:
                    await self._write_one(batch)
        except asyncio.CancelledError:
            # The loop is closing: nobody will write what still waits.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._writer = None

    async def _write_one(self, batch: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        self.batches += 1
        try:
            results = await self._write([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            results = [error] * len(batch)
        if len(results) != len(batch):
            mismatch = RuntimeError(f"a batch of {len(batch)} returned {len(results)} results")
            results = [mismatch] * len(batch)
        for (request, future), result in zip(batch, results, strict=True):
            if future.done():
                if self._on_abandoned is not None and not isinstance(result, BaseException):
                    self._on_abandoned(request, result)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
