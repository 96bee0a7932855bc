from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import bson.tz_util
import pytest
from mongomock_motor import AsyncMongoMockCollection

import tracker
from tests.rabbit import FAST, Broker
from tracker import TaskContext, TaskTracker
from tracker.constants import HEADER_EXECUTION_ID, HEADER_TASK_ID
from tracker.observability import (
    MetricsMiddleware,
    QueueStatsCollector,
    TrackerMetrics,
)
from tracker.testing import STORE_METHODS, RecordingMiddleware
from tracker.web.app import create_app
from tracker.web.health import Health
from tracker.web.server import HttpServer

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]

# "node": the broker node (host:port) a process is connected to, one of a few.
# Failure groups add state, muted and group: a group id names a cause, never a task, and at
# most 50 groups alert at once.
ALLOWED_LABELS = {"queue", "handler", "status", "category", "le", "node", "state", "muted", "group"}


def value(metrics: TrackerMetrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


async def run_mixed_traffic(broker: Broker, metrics: TrackerMetrics) -> tuple[str, list[str]]:
    """A: completes; B: transient then completes; C: validation error; G: Retry then completes;
    A enqueued twice; A's message delivered twice more; one poison message."""
    queue = await broker.new_queue()

    @tracker.tracked(queue, max_retries=2, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        kind = task.payload["kind"]
        if kind == "B" and task.retry_count == 0:
            raise tracker.TransientError("flaky")
        if kind == "C":
            raise ValueError("bad")
        if kind == "G" and task.retry_count == 0:
            raise tracker.Retry("not yet")

    recorder = RecordingMiddleware()
    ids = []
    async with tracker.Publisher(broker.url, middleware=(MetricsMiddleware(metrics),)) as pub:
        for kind in "ABCG":
            ids.append((await pub.enqueue(queue, {"kind": kind}, task_id=f"m:{kind}")).execution_id)
        await pub.enqueue(queue, {"kind": "A"}, task_id="m:A")
    for _ in range(2):
        await broker.publish_raw(
            queue,
            {"kind": "A"},
            headers={HEADER_TASK_ID: "m:A", HEADER_EXECUTION_ID: ids[0]},
            message_id=ids[0],
            correlation_id="m:A",
        )
    await broker.publish_raw(queue, b"not json", message_id="poison")
    async with tracker.Worker(
        [handle], broker.url, metrics=metrics, middleware=[recorder], lease=2
    ):
        await recorder.wait_for(completed=3, dead_lettered=1, rejected=1, duplicate=2)
    return queue, ids


async def test_each_metric_moves_exactly_when_its_event_happens(broker: Broker) -> None:
    # Given / When
    metrics = TrackerMetrics()
    queue, _ = await run_mixed_traffic(broker, metrics)
    h = "run_mixed_traffic.<locals>.handle"
    # Then
    assert value(metrics, "tracker_enqueued_total", queue=queue) == 4
    assert value(metrics, "tracker_enqueue_deduplicated_total", queue=queue) == 1
    assert value(metrics, "tracker_duplicate_deliveries_total", queue=queue, handler=h) == 2
    assert value(metrics, "tracker_completed_total", queue=queue, handler=h) == 3
    assert value(metrics, "tracker_failed_total", queue=queue, handler=h, category="transient") == 1
    assert (
        value(metrics, "tracker_failed_total", queue=queue, handler=h, category="validation") == 1
    )
    assert (
        value(metrics, "tracker_retried_total", queue=queue, handler=h, category="transient") == 2
    )
    assert (
        value(metrics, "tracker_dead_lettered_total", queue=queue, handler=h, category="validation")
        == 2
    )
    assert value(metrics, "tracker_rejected_messages_total", queue=queue) == 1
    assert value(metrics, "tracker_store_unavailable_total", queue=queue) == 0
    duration = "tracker_processing_duration_seconds_count"
    assert value(metrics, duration, queue=queue, handler=h, status="completed") == 3
    assert value(metrics, duration, queue=queue, handler=h, status="failed") == 2
    assert value(metrics, duration, queue=queue, handler=h, status="dlq") == 1
    assert value(metrics, "tracker_queue_wait_seconds_count", queue=queue) == 6
    assert value(metrics, "tracker_in_progress", queue=queue, handler=h) == 0


async def test_queue_gauges_match_get_queue_stats_and_labels_hold_no_ids(broker: Broker) -> None:
    # Given
    metrics = TrackerMetrics()
    queue, ids = await run_mixed_traffic(broker, metrics)
    # When
    collector = QueueStatsCollector(metrics, {queue: 300.0})
    assert await collector.refresh()
    # Then
    stats = await TaskTracker.get_queue_stats(queue)
    for status in ("queued", "processing", "dlq"):
        assert value(metrics, "tracker_executions", queue=queue, status=status) == stats[status]
    assert stats["dlq"] == 2
    assert value(metrics, "tracker_dlq_oldest_age_seconds", queue=queue) >= 0
    assert value(metrics, "tracker_stuck_executions", queue=queue) == 0
    ids_and_tasks = set(ids) | {"m:A", "m:B", "m:C", "m:G", "poison"}
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not ids_and_tasks & set(sample.labels.values()), sample


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _scrape(port: int) -> str:
    status, body = await _get(port, "/metrics")
    assert status == 200
    return body.decode()


async def test_a_scrape_reads_memory_only_whatever_the_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a served registry whose collector has read 2,000 stored executions
    metrics = TrackerMetrics()
    collector = QueueStatsCollector(metrics, {"reports": 300.0, "emails": 300.0})
    server = HttpServer(create_app(metrics.registry, Health()), host="127.0.0.1", port=0)
    await server.start()
    collection = TaskTracker.get_pymongo_collection()
    try:
        await collection.insert_many(
            [
                TaskTracker(
                    task_id=f"reports:{i}", queue_name="reports", status="dlq"
                ).to_document()
                for i in range(2000)
            ]
        )
        assert await collector.refresh()
        # When: the store refuses every call, and /metrics is scraped
        asked: list[str] = []

        def refuse(name: str) -> Any:
            def call(*_: Any, **__: Any) -> Any:
                asked.append(name)
                raise AssertionError(f"a scrape asked the store: {name}")

            return call

        for name in STORE_METHODS:
            monkeypatch.setattr(AsyncMongoMockCollection, name, refuse(name))
        bodies = [await _scrape(server.port) for _ in range(5)]
    finally:
        await server.stop()
    # Then: every scrape answered from memory, with the collected figures
    assert asked == []
    assert all('tracker_executions{queue="reports",status="dlq"} 2000.0' in b for b in bodies)


async def test_healthz_reports_mongodb_and_rabbitmq(broker: Broker) -> None:
    queue = await broker.new_queue()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None: ...

    running = tracker.Worker([handle], broker.url, metrics_port=0, metrics_host="127.0.0.1")
    await running.start()
    assert running.http_server is not None
    port = running.http_server.port
    try:
        status, body = await _get(port, "/healthz")
        assert status == 200
        assert b'"mongodb": true' in body
        assert b'"rabbitmq": true' in body
        assert (await _get(port, "/nothing"))[0] == 404
    finally:
        await running.stop()
    health = running.http_server
    await health.start()
    try:
        status, body = await _get(health.port, "/healthz")
        assert status == 503
        assert b'"rabbitmq": false' in body
    finally:
        await health.stop()


ZONES = [None, bson.tz_util.utc, UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=11))]


@pytest.mark.parametrize("enqueued_zone", ZONES)
@pytest.mark.parametrize("claimed_zone", ZONES)
async def test_the_queue_wait_is_the_time_between_enqueue_and_claim_in_any_zone(
    enqueued_zone: tzinfo | None, claimed_zone: tzinfo | None
) -> None:
    # Given: an execution enqueued 5.25 s before its claim, each time stored in a zone of its
    # own (naive: UTC, as MongoDB returns it; bson's utc: as a tz-aware client reads it)
    metrics = TrackerMetrics()
    middleware = MetricsMiddleware(metrics)
    claimed = datetime(2026, 11, 30, 1, 0, 5, 250_000, tzinfo=UTC)
    enqueued = claimed - timedelta(seconds=5.25)

    def stored(moment: datetime, zone: tzinfo | None) -> datetime:
        return moment.replace(tzinfo=None) if zone is None else moment.astimezone(zone)

    task = TaskContext(
        payload=None,
        task_id="t",
        execution_id="e",
        retry_count=0,
        max_retries=3,
        queue="wait-q",
        metadata={},
        record={
            "enqueuedAt": stored(enqueued, enqueued_zone),
            "processingStartedAt": stored(claimed, claimed_zone),
        },
    )
    # When
    await middleware.after_claim(task)
    # Then
    assert value(metrics, "tracker_queue_wait_seconds_count", queue="wait-q") == 1
    assert value(metrics, "tracker_queue_wait_seconds_sum", queue="wait-q") == 5.25
