"""One driver per RabbitMQ adapter, so that a contract test runs unchanged on both: the
aio-pika ``Worker``/``Publisher`` and the pika ``tracked_callback``/``SyncPublisher``.

A test describes its consumer as a ``Behaviour``: a plain function of (payload, retry
count) that returns a result or raises, sync so that both adapters can run it. The aio-pika
driver wraps it in an ``async def`` handler (run on a thread, as a blocking handler would be);
the pika driver in an ``on_message`` callback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pika
import pika.exceptions

import tracker
from tracker import TaskContext
from tracker.enqueue import EnqueueResult
from tracker.middleware import Middleware
from tracker.observability import MetricsMiddleware, TrackerMetrics
from tracker.rabbit.pika import StoreThread, SyncPublisher, tracked_callback

Behaviour = Callable[[Any, int], Any]


class Driver(Protocol):
    name: str
    metrics: TrackerMetrics
    # Used by the publisher too: set it before enqueueing to see the publisher's hooks.
    middleware: tuple[Middleware, ...]

    async def start(
        self, queue: str, behaviour: Behaviour, middleware: tuple[Middleware, ...], **options: Any
    ) -> None: ...

    async def stop(self) -> None:
        """Stop consuming (``start`` may follow)."""

    async def close(self) -> None:
        """Stop and release everything."""

    async def enqueue(self, queue: str, payload: Any, **options: Any) -> EnqueueResult: ...

    async def stopped_by_itself(self, timeout: float) -> int:
        """Wait until the consumer stopped on its own (a handler interrupted it); the exit
        code it asks the process for."""


def sample(driver: Driver, name: str, **labels: str) -> float:
    """A metric's value in the driver's registry (0 when never moved)."""
    return driver.metrics.registry.get_sample_value(name, labels) or 0.0


class AioDriver:
    name = "aio-pika"

    def __init__(self, url: str) -> None:
        self.url = url
        self.metrics = TrackerMetrics()
        self.worker: tracker.Worker | None = None
        self.middleware: tuple[Middleware, ...] = ()

    async def start(
        self, queue: str, behaviour: Behaviour, middleware: tuple[Middleware, ...], **options: Any
    ) -> None:
        worker_options = {k: options.pop(k) for k in ("lease", "timeout_grace") if k in options}

        async def handle(task: TaskContext) -> Any:
            return await asyncio.to_thread(behaviour, task.payload, task.retry_count)

        handle.__qualname__ = behaviour.__qualname__
        consumer = tracker.tracked(queue, **options)(handle)
        self.middleware = middleware
        self.worker = tracker.Worker(
            [consumer],
            self.url,
            middleware=middleware,
            metrics=self.metrics,
            requeue_delay=0.1,
            sweep_interval=None,
            stats_interval=None,
            **worker_options,
        )
        await self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()

    async def close(self) -> None:
        await self.stop()

    async def stopped_by_itself(self, timeout: float) -> int:
        assert self.worker is not None
        try:
            async with asyncio.timeout(timeout):
                await self.worker.run_forever()
        except tracker.HandlerInterrupt as interrupt:
            return interrupt.exit_code
        raise AssertionError("the worker stopped without an interrupt")

    async def enqueue(self, queue: str, payload: Any, **options: Any) -> EnqueueResult:
        middleware = (MetricsMiddleware(self.metrics), *self.middleware)
        async with tracker.Publisher(self.url, middleware=middleware) as pub:
            return await pub.enqueue(queue, payload, **options)


class PikaDriver:
    """A pika consumer on a thread of its own, as an application runs one: it reconnects
    when the broker drops the connection, as pika applications must."""

    name = "pika"

    def __init__(self, url: str) -> None:
        self.url = url
        self.metrics = TrackerMetrics()
        # The in-memory store is shared by every loop of the process; this thread's loop
        # uses the connection the test made.
        self.store = StoreThread()
        self.middleware: tuple[Middleware, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconnects = 0
        self.exit_code: int | None = None

    async def start(
        self, queue: str, behaviour: Behaviour, middleware: tuple[Middleware, ...], **options: Any
    ) -> None:
        self.middleware = middleware
        # A pika callback cannot be stopped: its attempt fails at the timeout, without grace.
        options.pop("timeout_grace", None)

        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> Any:
            retry_count = int((properties.headers or {}).get("x-retry-count", 0))
            result = behaviour(json.loads(body), retry_count)
            channel.basic_ack(method.delivery_tag)
            return result

        on_message.__qualname__ = behaviour.__qualname__
        callback = tracked_callback(
            queue, store=self.store, middleware=middleware, metrics=self.metrics, **options
        )(on_message)
        ready = threading.Event()
        self._stop.clear()
        self.exit_code = None
        self._thread = threading.Thread(
            target=self._consume, args=(callback, ready), name="pika-consumer", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(ready.wait, 15)
        assert ready.is_set(), "the pika consumer did not start"

    def _consume(self, callback: Any, ready: threading.Event) -> None:
        while not self._stop.is_set():
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.url))
            except pika.exceptions.AMQPConnectionError:
                time.sleep(0.2)
                continue
            try:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=10)
                callback.consume(channel)
                ready.set()
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.05)
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                self.reconnects += 1
                time.sleep(0.2)
            except SystemExit as exit:
                # A handler interrupted the consumer: an application stops, and so do we.
                self.exit_code = exit.code if isinstance(exit.code, int) else 1
                self._stop.set()
                if connection.is_open:
                    connection.close()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15)

    async def close(self) -> None:
        await self.stop()
        self.store.stop()

    async def stopped_by_itself(self, timeout: float) -> int:
        assert self._thread is not None
        await asyncio.to_thread(self._thread.join, timeout)
        assert self.exit_code is not None, "the pika consumer did not stop"
        return self.exit_code

    async def enqueue(self, queue: str, payload: Any, **options: Any) -> EnqueueResult:
        middleware = (MetricsMiddleware(self.metrics), *self.middleware)

        def send() -> EnqueueResult:
            with SyncPublisher(self.url, store=self.store, middleware=middleware) as pub:
                return pub.enqueue(queue, payload, **options)

        return await asyncio.to_thread(send)
