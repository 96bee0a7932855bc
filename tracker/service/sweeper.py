"""The periodic safety net (the TaskTracker schema's stuck-task detection): fails
executions stuck in processing past their timeout, republishes executions left queued with
no message, archives dead letters past their queue's auto-archive age, and has a queue's
``release`` free what a result holds outside MongoDB before its record expires. Free of any
transport: follow-up messages go to ``publish``."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from beanie import SortDirection
from pymongo.errors import PyMongoError

from tracker.clock import utcnow
from tracker.delivery.envelope import OutgoingMessage, PayloadNotJSONError
from tracker.delivery.outcomes import Outcomes
from tracker.errors import PublishError
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.operations import groups
from tracker.service.periodic import Periodic
from tracker.store import connection
from tracker.store.executions import archive

log = structlog.get_logger("tracker.sweeper")
Publish = Callable[[OutgoingMessage], Awaitable[None]]
BATCH = 500


@dataclass
class SweepReport:
    expired: int = 0
    republished: int = 0
    archived: int = 0
    released: int = 0


def auto_archive_reason(after_seconds: float) -> str:
    days = after_seconds / 86400
    return (
        f"Auto-archived after {days:g} days"
        if days >= 1
        else (f"Auto-archived after {after_seconds:g} seconds")
    )


class Sweeper(Periodic):
    """``queues`` maps each queue to the service recording its outcomes (under its rules).

    ``stuck_grace``: how long past its timeout an execution may stay processing before the
    sweeper fails it (the deadline listener normally does it at the timeout);
    ``republish_after``: how long a queued execution may wait before it is presumed to have
    no message and is published again (a second copy is harmless: it is a duplicate);
    ``unconfirmed_after``: the same for one whose publish the broker did not confirm;
    ``release_ahead``: how long before its record expires an execution is given to its
    queue's ``release`` (several sweeps' worth, so that one sweep at least sees it first).
    """

    def __init__(
        self,
        queues: Mapping[str, Outcomes],
        publish: Publish,
        *,
        interval: float = 60.0,
        stuck_grace: float = 30.0,
        republish_after: float = 600.0,
        unconfirmed_after: float = 30.0,
        release_ahead: float = 3600.0,
        archived_by: str | None = None,
    ) -> None:
        super().__init__(interval)
        self.queues = dict(queues)
        self.publish = publish
        self.stuck_grace = stuck_grace
        self.republish_after = republish_after
        self.unconfirmed_after = unconfirmed_after
        self.release_ahead = release_ahead
        self.archived_by = archived_by or f"tracker-sweeper@{socket.gethostname()}"

    name = "tracker-sweeper"

    async def tick(self) -> None:
        try:
            await self.sweep()
        except PyMongoError as error:
            log.warning("sweep skipped: MongoDB unavailable", error=str(error))
        except Exception:
            log.exception("sweep failed")

    async def sweep(self) -> SweepReport:
        await connection.refresh_clock()
        report = SweepReport()
        for queue, outcomes in self.queues.items():
            report.expired += await self.fail_stuck(queue, outcomes)
            report.republished += await self.republish_orphans(queue, outcomes)
            report.archived += await self.auto_archive(queue, outcomes)
            report.released += await self.release_expiring(queue, outcomes)
        if report.expired or report.republished or report.archived or report.released:
            log.info("sweep", **vars(report))
        return report

    async def fail_stuck(self, queue: str, outcomes: Outcomes) -> int:
        limit = timedelta(seconds=outcomes.rules.timeout + self.stuck_grace)
        stuck = await TaskTracker.find_stuck_tasks(queue, limit)
        failed = 0
        for execution in stuck[:BATCH]:
            decision = await outcomes.expire(execution.execution_id, execution.claim_token)
            if decision is None:
                continue
            for message in decision.publish:
                await self.publish(message)
            failed += decision.outcome != "stale"  # someone else failed it first
        return failed

    async def republish_orphans(self, queue: str, outcomes: Outcomes) -> int:
        """Publish again the queued executions presumed to have no message: those waiting
        longer than ``republish_after``, and those whose publish was not confirmed for
        longer than ``unconfirmed_after`` (a second copy is harmless: a duplicate)."""
        now = utcnow()
        republished = 0
        for condition, after in (
            ("enqueuedAt", self.republish_after),
            ("publishUnconfirmedAt", self.unconfirmed_after),
        ):
            cutoff = now - timedelta(seconds=after)
            waiting = (
                await TaskTracker.find(
                    {
                        "queueName": queue,
                        "status": TaskStatus.QUEUED.value,
                        condition: {"$lt": cutoff},
                    }
                )
                .sort([(condition, SortDirection.ASCENDING)])
                .limit(BATCH)
                .to_list()
            )
            for execution in waiting:
                if execution.republished_at is not None and execution.republished_at > cutoff:
                    continue
                republished += await self._republish(execution, outcomes, now)
        return republished

    async def _republish(self, execution: TaskTracker, outcomes: Outcomes, now: datetime) -> int:
        result = await connection.collection().update_one(
            {
                "taskId": execution.task_id,
                "executionId": execution.execution_id,
                "status": TaskStatus.QUEUED.value,
            },
            {"$set": {"republishedAt": now, "updatedAt": now}},
        )
        if not result.matched_count:
            return 0
        try:
            await self.publish(outcomes.retries.message_for(execution, 0.0))
        except PublishError as error:
            # Not republished after all: the next sweep tries again; the others go on now.
            await connection.collection().update_one(
                {"taskId": execution.task_id, "executionId": execution.execution_id},
                {"$unset": {"republishedAt": ""}},
            )
            log.warning(
                "could not republish", execution_id=execution.execution_id, error=str(error)
            )
            return 0
        except PayloadNotJSONError as error:
            # Its message cannot be built (a payload stored through the Python API that
            # JSON cannot encode): say so, leave it for an operator, sweep the others.
            log.error(
                "cannot republish: the stored payload is not JSON; edit it or archive it",
                execution_id=execution.execution_id,
                error=str(error),
            )
            return 0
        if execution.publish_unconfirmed_at is not None:
            await connection.collection().update_one(
                {"taskId": execution.task_id, "executionId": execution.execution_id},
                {"$unset": {"publishUnconfirmedAt": ""}},
            )
        return 1

    async def auto_archive(self, queue: str, outcomes: Outcomes) -> int:
        after = outcomes.rules.dlq_auto_archive_after
        if after is None:
            return 0
        cutoff = utcnow() - timedelta(seconds=after)
        old = (
            await TaskTracker.find(
                {"queueName": queue, "status": TaskStatus.DLQ.value, "enqueuedAt": {"$lt": cutoff}}
            )
            .limit(BATCH)
            .to_list()
        )
        archived = 0
        for execution in old:
            _, changed = await archive(
                execution.execution_id,
                reason=auto_archive_reason(after),
                archived_by=self.archived_by,
                retention=outcomes.rules.archived_retention,
            )
            archived += changed
        if archived:
            await outcomes.hooks.run("on_archived", queue, archived)
            await groups.settle(e.group_id for e in old if e.group_id)
        return archived

    async def release_expiring(self, queue: str, outcomes: Outcomes) -> int:
        """Call the queue's ``release`` with each execution whose record expires within
        ``release_ahead`` (on the server's clock, which the TTL index deletes by), and mark
        it ``releasedAt``; one that raises is left unmarked, for the next sweep."""
        release = outcomes.rules.release
        if release is None:
            return 0
        horizon = connection.server_clock().estimate() + timedelta(seconds=self.release_ahead)
        expiring = (
            await TaskTracker.find(
                {
                    "queueName": queue,
                    "expiresAt": {"$lt": horizon},
                    "releasedAt": {"$exists": False},
                }
            )
            .sort([("expiresAt", SortDirection.ASCENDING)])
            .limit(BATCH)
            .to_list()
        )
        released = 0
        for execution in expiring:
            try:
                await release(execution)
            except Exception as error:
                log.warning(
                    "release failed, trying again next sweep",
                    execution_id=execution.execution_id,
                    error=f"{type(error).__name__}: {error}",
                )
                continue
            await connection.collection().update_one(
                {"taskId": execution.task_id, "executionId": execution.execution_id},
                {"$set": {"releasedAt": utcnow()}},
            )
            released += 1
        return released
