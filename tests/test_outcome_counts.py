"""One outcome, one count: attempts that time out are counted once each in the metrics and
logged once each, and every retry a log line announces exists in the store, whichever of
the deadline listener and the worker's own timeout saw the attempt end first."""

from __future__ import annotations

import asyncio

import pytest

import tracker
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.observability import TrackerMetrics
from tracker.testing import RecordingMiddleware, capture_logs

pytestmark = [pytest.mark.usefixtures("store"), pytest.mark.rabbitmq]


def total(metrics: TrackerMetrics, name: str, queue: str) -> float:
    """The sum of a counter's series for ``queue``, whatever the other labels."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and sample.labels.get("queue") == queue
    )


async def test_each_timed_out_attempt_is_counted_and_logged_once(broker: Broker) -> None:
    # Given: a handler that outlives its 1 s timeout on every attempt, two retries allowed
    queue = await broker.new_queue()

    @tracker.tracked(queue, timeout=1, max_retries=2, retry_policy=FAST)
    async def slow(task: TaskContext) -> None:
        await asyncio.sleep(2.5)

    metrics = TrackerMetrics()
    recorder = RecordingMiddleware()
    with capture_logs() as logs:
        async with (
            tracker.Worker(
                [slow],
                broker.url,
                metrics=metrics,
                middleware=[recorder],
                timeout_grace=0.5,
                sweep_interval=None,
                stats_interval=None,
            ),
            tracker.Publisher(broker.url) as pub,
        ):
            # When
            await pub.enqueue(queue, {}, task_id="slow:1")
            chain = await wait_status("slow:1", "dlq", timeout=60)
            # the late handlers' own outcomes, refused, come in after the deadlines
            await recorder.wait_for(stale=3, timeout=30)
    # Then: three attempts, two retried, one dead letter; in the store...
    assert [d.status for d in chain] == [TaskStatus.FAILED, TaskStatus.FAILED, TaskStatus.DLQ]
    # ...in the metrics...
    assert total(metrics, "tracker_failed_total", queue) == 3
    assert total(metrics, "tracker_retried_total", queue) == 2
    assert total(metrics, "tracker_dead_lettered_total", queue) == 1
    # ...and in the logs, each retry announced being one that exists
    retries = [line for line in logs if line["event"] == "task failed, retry scheduled"]
    dead = [line for line in logs if line["event"] == "task dead-lettered"]
    assert len(retries) == 2
    assert len(dead) == 1
    stored = {doc.execution_id for doc in await TaskTracker.find({"taskId": "slow:1"}).to_list()}
    assert {line["next_execution_id"] for line in retries} <= stored
    assert [d.execution_id for d in chain[1:]] == [line["next_execution_id"] for line in retries]
