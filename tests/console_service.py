"""A running service with its console, for the browser tests: a Worker on a free loopback
port, fed through its own API with tasks that fail (and one that does not)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

import tracker
from tracker import TaskContext

FAILING = 3


async def handle(task: TaskContext) -> dict[str, bool]:
    if task.payload.get("fail"):
        raise tracker.ProcessingError(f"partner refused order {task.payload.get('order')}")
    return {"ok": True}


@dataclass
class RunningConsole:
    url: str
    queue: str
    task_ids: list[str]
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def running_console(amqp_url: str, queue: str) -> AsyncIterator[RunningConsole]:
    """The service consuming ``queue`` with ``FAILING`` dead letters in one failure group."""
    consumer = tracker.tracked(queue, max_retries=0)(handle)
    worker = tracker.Worker(
        [consumer],
        amqp_url,
        concurrency=4,
        metrics_port=0,
        metrics_host="127.0.0.1",
        stats_interval=None,
        sweep_interval=None,
    )
    async with worker:
        assert worker.http_server is not None
        url = f"http://127.0.0.1:{worker.http_server.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            task_ids = []
            for order in range(FAILING):
                payload = {"fail": True, "order": 1000 + order, "card": "4111-1111"}
                created = await http.post(
                    "/api/v1/tasks",
                    json={"queue": queue, "payload": payload, "metadata": {"orderId": order}},
                )
                assert created.status_code == 201, created.text
                task_ids.append(created.json()["task_id"])
            done = await http.post("/api/v1/tasks", json={"queue": queue, "payload": {"n": 1}})
            assert done.status_code == 201, done.text
            await until_dead_letters(queue, FAILING)
            yield RunningConsole(url, queue, task_ids, http)


async def until_dead_letters(queue: str, count: int, within: float = 30) -> None:
    async with asyncio.timeout(within):
        while (await tracker.TaskTracker.get_queue_stats(queue))["dlq"] < count:
            await asyncio.sleep(0.1)
