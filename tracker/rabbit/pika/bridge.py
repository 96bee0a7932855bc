"""Running the tracker's asyncio core beside a synchronous pika connection.

pika's ``BlockingConnection`` must only be used from the thread that owns it. The tracker's
store and delivery core are asynchronous and run on a ``StoreThread``'s event loop. When a
delivery arrives, the owner thread hands the core a coroutine and *serves* while it waits: it
runs the channel operations the core asks for (publish, ack, declare), and it keeps the
connection's I/O going (``process_data_events(0)``: heartbeats, confirms), so a long handler
cannot starve the connection's heartbeats. pika refuses to dispatch callbacks while one is
running, so no second delivery starts inside the first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pika.adapters.blocking_connection import BlockingConnection
from pika.exceptions import AMQPError

from tracker.store import connection as store_connection

T = TypeVar("T")
_Call = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]
# How often the owner thread lets pika read and write while it waits for the core.
IO_INTERVAL = 0.05


class StoreThread:
    """An event loop on a daemon thread that owns the tracker's store connection."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tracker-store", daemon=True
        )
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @classmethod
    def connect(cls, mongodb_url: str | None = None, database: str | None = None) -> StoreThread:
        """Start the thread and connect the store on it (``None``: the in-memory MongoDB)."""
        from tracker.constants import DEFAULT_DATABASE

        store = cls()
        store.call(store_connection.connect(mongodb_url, database or DEFAULT_DATABASE))
        return store

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the store's loop and wait for its result."""
        return self.submit(coroutine).result(timeout)

    def close(self) -> None:
        """Disconnect the store and stop the thread."""
        if self._loop.is_closed():
            return
        self.call(store_connection.disconnect())
        self.stop()

    def stop(self) -> None:
        """Stop the thread, leaving the store connected (it may be shared)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class OwnerBridge:
    """Channel operations requested by coroutines (or by a handler's thread), carried out by
    the thread that owns the pika connection while it serves."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.owner: threading.Thread | None = None

    async def run(self, operation: Callable[[], T]) -> T:
        """From the store's loop: ``operation()`` in the owner thread, awaited."""
        return await asyncio.wrap_future(self._request(operation))

    def call(self, operation: Callable[[], T]) -> T:
        """From any thread: ``operation()`` in the owner thread, waited for (at once when the
        caller is the owner)."""
        if threading.current_thread() is self.owner:
            return operation()
        return self._request(operation).result()

    def _request(self, operation: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((operation, future))
        return future

    def serve_until(
        self, done: concurrent.futures.Future[Any], connection: BlockingConnection
    ) -> None:
        """In the owner thread: carry out requested operations and keep the connection's I/O
        going until ``done``; then carry out what is still queued. If the connection is lost
        meanwhile, the operations still asked for fail at once (the core then leaves the
        delivery to be redelivered), and the loss is raised once ``done``, for the
        application to reconnect as pika applications do."""
        self.owner = threading.current_thread()
        done.add_done_callback(lambda _: self._calls.put(None))
        lost: AMQPError | None = None
        while not done.done():
            try:
                call = self._calls.get(timeout=IO_INTERVAL)
            except queue.Empty:
                if lost is None and connection.is_open:
                    try:
                        connection.process_data_events(0)
                    except AMQPError as exc:
                        lost = exc
                continue
            if call is not None:
                _carry_out(call)
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                _carry_out(call)
        if lost is not None:
            raise lost


def _carry_out(call: _Call) -> None:
    operation, future = call
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(operation())
    except BaseException as exc:
        future.set_exception(exc)
