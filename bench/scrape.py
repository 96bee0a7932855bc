"""What a ``/metrics`` scrape costs with a small and a large stored history: the service's
HTTP endpoint (``tracker.web``) on this event loop, the registry refreshed from the store in
the background (``QueueStatsCollector``), the history in a database of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import tracker
from tracker.observability import QueueStatsCollector, TrackerMetrics
from tracker.store.connection import ensure_indexes
from tracker.web.app import create_app
from tracker.web.health import Health
from tracker.web.server import HttpServer

REQUESTS = 50
QUEUES = {"reports": 300.0, "emails": 300.0}


@dataclass(frozen=True)
class ScrapeRow:
    stored: int
    scrape_ms: float  # mean of REQUESTS sequential GET /metrics, connection included
    refresh_ms: float  # one background refresh of the queue statistics
    body_bytes: int


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


async def _store(have: int, size: int) -> None:
    """Completed executions (one in ten dead-lettered) up to ``size``, in batches."""
    for first in range(have, size, 1000):
        await tracker.TaskTracker.insert_many(
            [
                tracker.TaskTracker(
                    task_id=f"reports:{i}",
                    queue_name="reports",
                    status=tracker.TaskStatus.DLQ if i % 10 == 0 else tracker.TaskStatus.COMPLETED,
                )
                for i in range(first, min(first + 1000, size))
            ]
        )


async def scrape_cost(mongodb_url: str, sizes: tuple[int, ...]) -> list[ScrapeRow]:
    """Connects the store to a fresh database of ``mongodb_url`` (and leaves it connected)."""
    await tracker.connect(mongodb_url, f"bench_scrape_{uuid.uuid4().hex[:8]}")
    await ensure_indexes()
    metrics = TrackerMetrics()
    collector = QueueStatsCollector(metrics, QUEUES)
    server = HttpServer(create_app(metrics.registry, Health()))
    await server.start()
    rows = []
    try:
        have = 0
        for size in sizes:
            await _store(have, size)
            have = size
            started = time.perf_counter()
            await collector.refresh()
            refresh_ms = (time.perf_counter() - started) * 1000
            for _ in range(5):
                response = await _get(server.port)
            if b" 200 " not in response.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"GET /metrics answered {response[:80]!r}")
            started = time.perf_counter()
            for _ in range(REQUESTS):
                await _get(server.port)
            scrape_ms = (time.perf_counter() - started) * 1000 / REQUESTS
            body = response.split(b"\r\n\r\n", 1)[1]
            rows.append(ScrapeRow(size, scrape_ms, refresh_ms, len(body)))
    finally:
        await server.stop()
    return rows
