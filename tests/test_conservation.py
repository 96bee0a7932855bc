from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

import tracker
from tests.rabbit import FAST, Broker
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.testing import RecordingMiddleware

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]

MESSAGES = 500


async def test_five_hundred_messages_none_lost_none_completed_twice(broker: Broker) -> None:
    # Given: random transient and validation failures, two competing workers
    queue = await broker.new_queue()
    rng = random.Random(20261123)
    fate = {
        f"load:{i}": rng.choices(["ok", "transient", "invalid"], [70, 20, 10])[0]
        for i in range(MESSAGES)
    }
    completions: Counter[str] = Counter()

    @tracker.tracked(queue, max_retries=3, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        await asyncio.sleep(rng.random() * 0.005)
        kind = fate[task.task_id]
        if kind == "invalid":
            raise tracker.ValidationError("bad input")
        if kind == "transient" and task.retry_count == 0:
            raise tracker.TransientError("flaky")
        completions[task.task_id] += 1

    first_seen = RecordingMiddleware()
    steady = RecordingMiddleware()
    first = tracker.Worker([handle], broker.url, concurrency=20, lease=1.0, middleware=[first_seen])
    second = tracker.Worker([handle], broker.url, concurrency=20, lease=1.0, middleware=[steady])
    await first.start()
    await second.start()
    try:
        async with tracker.Publisher(broker.url) as pub:
            for task_id in fate:
                await pub.enqueue(queue, {"id": task_id}, task_id=task_id)
        # When: one worker crashes in the middle of the run
        async with asyncio.timeout(30):
            while first_seen.outcomes["completed"] < 100:
                await asyncio.sleep(0.01)
        await first.abort()
        async with asyncio.timeout(60):
            while True:
                stats = await TaskTracker.get_queue_stats(queue)
                if (
                    stats["completed"] + stats["dlq"] >= MESSAGES
                    and stats["queued"] == 0
                    and stats["processing"] == 0
                ):
                    break
                await asyncio.sleep(0.2)
    finally:
        await second.stop()
        await first.stop()
    # Then
    stats = await TaskTracker.get_queue_stats(queue)
    expected_invalid = sum(kind == "invalid" for kind in fate.values())
    assert stats["completed"] + stats["dlq"] == MESSAGES
    assert stats["dlq"] == expected_invalid
    assert stats["failed"] == sum(kind == "transient" for kind in fate.values())
    for task_id, kind in fate.items():
        finals = await TaskTracker.find(
            {"taskId": task_id, "status": {"$in": ["completed", "dlq"]}}
        ).to_list()
        assert len(finals) == 1, task_id
        assert finals[0].status is (TaskStatus.DLQ if kind == "invalid" else TaskStatus.COMPLETED)
    assert set(completions) == {t for t, k in fate.items() if k != "invalid"}
    # a handler that completes is never run again once its outcome is recorded; only the one
    # in flight when the worker crashed may have run twice
    assert sum(count > 1 for count in completions.values()) <= first.concurrency
    assert await broker.depth(queue) == 0
