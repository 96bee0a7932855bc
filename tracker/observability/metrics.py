"""The metrics, built once in a container over an injected ``CollectorRegistry``, and the
middleware that moves them. Labels are bounded: queue, handler, status, category. Never an id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tracker.clock import aware, utcnow
from tracker.consumer import TaskContext
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope
from tracker.errors import ControlFlow
from tracker.lifecycle import ErrorCategory, TaskStatus
from tracker.middleware import Middleware
from tracker.models import TaskTracker

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# Statuses whose counts can fall as well as rise: gauges from MongoDB. The others only grow,
# and come from counters.
GAUGED_STATUSES = (TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.DLQ)


class TrackerMetrics:
    """Every tracker metric, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.enqueued = Counter(
            "tracker_enqueued_total", "Executions created by enqueue.", ["queue"], registry=r
        )
        self.enqueue_deduplicated = Counter(
            "tracker_enqueue_deduplicated_total",
            "Enqueues answered with an existing execution of the task (nothing published).",
            ["queue"],
            registry=r,
        )
        self.duplicate_deliveries = Counter(
            "tracker_duplicate_deliveries_total",
            "Deliveries of a finished or live-claimed execution, acked without running.",
            ["queue", "handler"],
            registry=r,
        )
        self.completed = Counter(
            "tracker_completed_total", "Executions completed.", ["queue", "handler"], registry=r
        )
        self.failed = Counter(
            "tracker_failed_total",
            "Attempts that failed with an error, retried or not (control flow excluded).",
            ["queue", "handler", "category"],
            registry=r,
        )
        self.retried = Counter(
            "tracker_retried_total",
            "Retries scheduled.",
            ["queue", "handler", "category"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "tracker_dead_lettered_total",
            "Executions moved to the dead-letter queue (bad input included, as validation).",
            ["queue", "handler", "category"],
            registry=r,
        )
        self.rejected = Counter(
            "tracker_rejected_messages_total",
            "Deliveries that broke the message contract (also counted as dead-lettered).",
            ["queue"],
            registry=r,
        )
        self.archived = Counter(
            "tracker_archived_total", "Dead letters archived.", ["queue"], registry=r
        )
        self.stale_outcomes = Counter(
            "tracker_stale_outcomes_total",
            "Outcomes refused because the claim had been superseded.",
            ["queue", "handler"],
            registry=r,
        )
        self.store_unavailable = Counter(
            "tracker_store_unavailable_total",
            "Deliveries requeued because MongoDB did not answer.",
            ["queue"],
            registry=r,
        )
        self.processing_duration = Histogram(
            "tracker_processing_duration_seconds",
            "From claim to durable outcome, by final status of the attempt.",
            ["queue", "handler", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "tracker_queue_wait_seconds",
            "From enqueue (a retry: the end of its delay) to processing start.",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "tracker_in_progress",
            "Handlers running in this process.",
            ["queue", "handler"],
            registry=r,
        )
        self.executions = Gauge(
            "tracker_executions",
            "Executions per queue in the statuses that can shrink (queued, processing, dlq), "
            "from MongoDB, refreshed in the background.",
            ["queue", "status"],
            registry=r,
        )
        self.stuck = Gauge(
            "tracker_stuck_executions",
            "Executions processing past their deadline (timeoutAt): what `tracker stuck` lists.",
            ["queue"],
            registry=r,
        )
        self.dlq_oldest_age = Gauge(
            "tracker_dlq_oldest_age_seconds",
            "Age of the oldest dead letter (since its enqueue); 0 when the DLQ is empty.",
            ["queue"],
            registry=r,
        )
        self.queued_oldest_age = Gauge(
            "tracker_queued_oldest_age_seconds",
            "How long the oldest due queued execution has waited; 0 when none waits.",
            ["queue"],
            registry=r,
        )
        self.stats_refreshed = Gauge(
            "tracker_queue_stats_refreshed_timestamp_seconds",
            "When the queue statistics were last read from MongoDB (Unix time).",
            registry=r,
        )
        self.stats_errors = Counter(
            "tracker_queue_stats_errors_total",
            "Failed refreshes of the queue statistics.",
            registry=r,
        )
        self.broker_failovers = Counter(
            "tracker_broker_failovers_total",
            "Times this process's broker connection moved to another node.",
            registry=r,
        )
        self.broker_node = Gauge(
            "tracker_broker_node",
            "1 for the broker node (host:port) this process is connected to.",
            ["node"],
            registry=r,
        )
        self.failure_groups = Gauge(
            "tracker_failure_groups",
            "Failure groups by state (open, resolved, regressed) and muted flag, from MongoDB.",
            ["state", "muted"],
            registry=r,
        )
        for state in ("open", "resolved", "regressed"):
            for muted in ("false", "true"):
                self.failure_groups.labels(state, muted)
        self.failure_group_alerting = Gauge(
            "tracker_failure_group_alerting",
            "1 for each unmuted failure group that is new (open, first seen within the hour) or "
            "regressed, the most recent 50: `group` is the id `tracker groups show` takes.",
            ["group", "queue", "state"],
            registry=r,
        )
        self._nodes: set[str] = set()

    def connected_to(self, node: str | None) -> None:
        """Record the node connected to (its series 1, every other seen 0)."""
        for seen in self._nodes:
            self.broker_node.labels(seen).set(0)
        if node is not None:
            self._nodes.add(node)
            self.broker_node.labels(node).set(1)

    def declare(self, queue: str, handler: str | None = None) -> None:
        """Create every labelled series of ``queue`` at zero, so dashboards and ratios have
        data before the first event (Prometheus cannot tell 'zero' from 'never')."""
        for counter in (
            self.enqueued,
            self.enqueue_deduplicated,
            self.rejected,
            self.archived,
            self.store_unavailable,
        ):
            counter.labels(queue)
        self.queue_wait.labels(queue)
        for gauge in (self.stuck, self.dlq_oldest_age, self.queued_oldest_age):
            gauge.labels(queue)
        for status in GAUGED_STATUSES:
            self.executions.labels(queue, status.value)
        if handler is None:
            return
        for counter in (self.duplicate_deliveries, self.completed, self.stale_outcomes):
            counter.labels(queue, handler)
        self.in_progress.labels(queue, handler)
        for category in ErrorCategory:
            for labelled in (self.failed, self.retried, self.dead_lettered):
                labelled.labels(queue, handler, category.value)
        for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.DLQ):
            self.processing_duration.labels(queue, handler, status.value)


class _QueueSeries:
    """The series every delivery of one queue moves, looked up once (a ``labels()`` call
    per delivery and metric costs more than the increment)."""

    def __init__(self, metrics: TrackerMetrics, queue: str, handler: str) -> None:
        self.in_progress = metrics.in_progress.labels(queue, handler)
        self.queue_wait = metrics.queue_wait.labels(queue)
        self.completed = metrics.completed.labels(queue, handler)
        self.stale = metrics.stale_outcomes.labels(queue, handler)
        self.durations = {
            outcome: metrics.processing_duration.labels(queue, handler, status.value)
            for outcome, status in (
                ("completed", TaskStatus.COMPLETED),
                ("retried", TaskStatus.FAILED),
                ("dead_lettered", TaskStatus.DLQ),
            )
        }


class MetricsMiddleware(Middleware):
    """Moves ``metrics`` as deliveries and enqueues happen; ``handlers`` maps each queue to
    its handler's name (the ``handler`` label)."""

    def __init__(self, metrics: TrackerMetrics, handlers: dict[str, str] | None = None) -> None:
        self.metrics = metrics
        self.handlers = dict(handlers or {})
        self._started: dict[str, float] = {}
        self._series: dict[str, _QueueSeries] = {}
        for queue, handler in self.handlers.items():
            metrics.declare(queue, handler)

    def watch(self, queues: Iterable[tuple[str, str]]) -> None:
        for queue, handler in queues:
            self.handlers[queue] = handler
            self._series.pop(queue, None)
            self.metrics.declare(queue, handler)

    def _handler(self, queue: str) -> str:
        return self.handlers.get(queue, "unknown")

    def _of(self, queue: str) -> _QueueSeries:
        series = self._series.get(queue)
        if series is None:
            series = self._series[queue] = _QueueSeries(self.metrics, queue, self._handler(queue))
        return series

    async def after_claim(self, task: TaskContext) -> None:
        series = self._of(task.queue)
        started = _moment(task.record.get("processingStartedAt")) or utcnow()
        self._started[task.execution_id] = started.timestamp()
        series.in_progress.inc()
        enqueued = _moment(task.record.get("enqueuedAt"))
        if enqueued is not None:
            series.queue_wait.observe(max((started - enqueued).total_seconds(), 0.0))

    async def after_handler(self, task: TaskContext, error: BaseException | None) -> None:
        self._of(task.queue).in_progress.dec()

    async def on_abandoned(self, task: TaskContext) -> None:
        self._of(task.queue).in_progress.dec()
        self._started.pop(task.execution_id, None)

    async def after_outcome(self, task: TaskContext, decision: Decision) -> None:
        series = self._of(task.queue)
        started = self._started.pop(task.execution_id, None)
        if decision.outcome == "completed":
            series.completed.inc()
        elif decision.outcome == "stale":
            series.stale.inc()
        duration = series.durations.get(decision.outcome)
        if duration is not None and started is not None:
            duration.observe(max(time.time() - started, 0.0))

    async def on_failure(
        self, task: TaskContext, category: ErrorCategory, retried: bool, error: BaseException
    ) -> None:
        handler = self._handler(task.queue)
        if not isinstance(error, ControlFlow):
            self.metrics.failed.labels(task.queue, handler, category.value).inc()
        counter = self.metrics.retried if retried else self.metrics.dead_lettered
        counter.labels(task.queue, handler, category.value).inc()

    async def on_duplicate(self, envelope: Envelope, execution: TaskTracker) -> None:
        self.metrics.duplicate_deliveries.labels(
            envelope.queue, self._handler(envelope.queue)
        ).inc()

    async def on_rejected(self, envelope: Envelope, reason: str) -> None:
        self.metrics.rejected.labels(envelope.queue).inc()
        self.metrics.dead_lettered.labels(
            envelope.queue, self._handler(envelope.queue), ErrorCategory.VALIDATION.value
        ).inc()

    async def on_store_unavailable(self, envelope: Envelope, error: Exception) -> None:
        self.metrics.store_unavailable.labels(envelope.queue).inc()

    async def on_enqueued(self, queue: str, execution: TaskTracker, deduplicated: bool) -> None:
        counter = self.metrics.enqueue_deduplicated if deduplicated else self.metrics.enqueued
        counter.labels(queue).inc()

    async def on_archived(self, queue: str, count: int) -> None:
        self.metrics.archived.labels(queue).inc(count)


def _moment(value: Any) -> datetime | None:
    """A stored time, aware but in its own zone (it is only subtracted); None if none."""
    return aware(value) if isinstance(value, datetime) else None
