"""Queue statistics and failure groups read from MongoDB in the background and served from
memory, so a scrape never waits on MongoDB and costs the same however long the history
grows."""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog
from beanie import SortDirection
from pymongo.errors import PyMongoError

from tracker.clock import utcnow
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.observability.metrics import GAUGED_STATUSES, TrackerMetrics
from tracker.operations import group_upkeep
from tracker.operations.stuck import stuck_filter
from tracker.service.periodic import Periodic
from tracker.store import connection

log = structlog.get_logger("tracker.metrics")


class QueueStatsCollector(Periodic):
    """Refreshes the per-queue gauges every ``interval`` seconds, for each of ``queues`` (a
    mapping to the consumer's timeout, kept for callers; an execution counts as stuck past
    its own stored deadline, ``tracker.operations.stuck``).

    Every read is an indexed count or a one-document lookup on (queueName, status, ...): the
    cost follows the number of active and dead-lettered executions, never the completed ones.
    """

    def __init__(
        self, metrics: TrackerMetrics, queues: Mapping[str, float], interval: float = 15.0
    ) -> None:
        super().__init__(interval)
        self.metrics = metrics
        self.queues = dict(queues)
        for queue in self.queues:
            metrics.declare(queue)

    name = "tracker-queue-stats"

    async def tick(self) -> None:
        await self.refresh()

    async def refresh(self) -> bool:
        """Read every queue's statistics now; False (gauges left as they were) on failure."""
        try:
            for queue in self.queues:
                await self._refresh_queue(queue)
            await self._refresh_groups()
        except PyMongoError as error:
            self.metrics.stats_errors.inc()
            log.warning("queue statistics not refreshed", error=str(error))
            return False
        self.metrics.stats_refreshed.set(time.time())
        return True

    async def _refresh_queue(self, queue: str) -> None:
        collection = connection.collection()
        now = utcnow()
        for status in GAUGED_STATUSES:
            count = await collection.count_documents({"queueName": queue, "status": status.value})
            self.metrics.executions.labels(queue, status.value).set(count)
        # The very definition `tracker stuck` lists by, so the alert and the command agree.
        stuck = await collection.count_documents(
            stuck_filter(connection.server_clock().estimate(), queue)
        )
        self.metrics.stuck.labels(queue).set(stuck)
        for status, gauge in (
            (TaskStatus.DLQ, self.metrics.dlq_oldest_age),
            (TaskStatus.QUEUED, self.metrics.queued_oldest_age),
        ):
            oldest = (
                await TaskTracker.find({"queueName": queue, "status": status.value})
                .sort([("enqueuedAt", SortDirection.ASCENDING)])
                .limit(1)
                .to_list()
            )
            age = (now - oldest[0].enqueued_at).total_seconds() if oldest else 0.0
            gauge.labels(queue).set(max(age, 0.0))

    async def _refresh_groups(self) -> None:
        """Failure groups by state, and the series of the groups worth an alert (replaced as
        a whole, so a group that stops alerting loses its series)."""
        counts = await group_upkeep.state_counts()
        alerting = await group_upkeep.alerting(utcnow())
        for (state, muted), count in counts.items():
            self.metrics.failure_groups.labels(state, str(muted).lower()).set(count)
        gauge = self.metrics.failure_group_alerting
        gauge.clear()
        for group in alerting:
            gauge.labels(group.id, group.queue, group.state).set(1)
