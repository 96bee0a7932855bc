"""Running replay jobs: ``ReplayRunner`` takes a job under a lease (renewed at every step,
so a runner that dies loses it and another resumes the job), republishes its items in order
at the job's rate, holds the job at its canary until those items' new executions have
ended, and follows republished items to their end before completing the job.

Each item runs at most once: its new execution id is chosen and stored on the item before
the execution is created, so a runner resuming an item finds the execution instead of
creating a second one; at worst its message is published twice, which the consumer
recognises as a duplicate of the same execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from tracker.clock import as_utc
from tracker.operations import replay_items
from tracker.operations.replay_jobs import (
    ReplayJob,
    expire_items,
    job_from,
    jobs_collection,
    recount,
)
from tracker.operations.republish import Publish
from tracker.service.cancelling import cancel_and_wait
from tracker.service.periodic import Periodic
from tracker.store import connection
from tracker.store.errors import describe

log = structlog.get_logger("tracker.replays")

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
RUNNABLE: Final = ["pending", "running"]
Progress = Callable[[ReplayJob], Awaitable[None] | None]


class ReplayRunner(Periodic):
    """Runs the replay jobs no live runner holds, each as a task of its own (at most
    ``max_jobs``), publishing with ``publish``. ``lease``: seconds a job stays this runner's
    without a renewal; ``poll``: seconds between looks at the executions a job follows;
    ``clock``/``sleep`` pace the rate (a test passes fakes)."""

    name = "tracker-replays"

    def __init__(
        self,
        publish: Publish,
        *,
        owner: str | None = None,
        interval: float = 2.0,
        lease: float = 30.0,
        poll: float = 1.0,
        max_jobs: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(interval)
        self.publish = publish
        self.owner = owner or f"replay-runner:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.poll = poll
        self.max_jobs = max_jobs
        self.clock = clock
        self.sleep = sleep
        self._running: dict[str, asyncio.Task[ReplayJob | None]] = {}
        self._tokens: dict[str, str] = {}
        self._next_at: dict[str, float] = {}

    async def tick(self) -> None:
        try:
            await self.run_once()
        except PyMongoError as error:
            log.warning("replays not looked at: MongoDB unavailable", error=describe(error))
        except Exception:
            log.exception("replay runner failed")

    async def run_once(self) -> list[str]:
        """Start a task for each job no runner holds (up to ``max_jobs`` here); their ids."""
        free = self.max_jobs - len(self._running)
        if free <= 0:
            return []
        now = connection.server_clock().estimate()
        found = (
            await jobs_collection()
            .find(
                {"state": {"$in": RUNNABLE}, "leaseExpiresAt": {"$lte": now}},
                projection={"_id": 1},
                sort=[("leaseExpiresAt", 1)],
            )
            .limit(free + len(self._running))
            .to_list(None)
        )
        started = []
        for doc in found:
            job_id = str(doc["_id"])
            if job_id in self._running or len(self._running) >= self.max_jobs:
                continue
            task = asyncio.create_task(self._guarded(job_id), name=f"replay-{job_id}")
            self._running[job_id] = task
            task.add_done_callback(self._forget(job_id))
            started.append(job_id)
        return started

    def _forget(self, job_id: str) -> Callable[[asyncio.Task[ReplayJob | None]], None]:
        def forget(_: asyncio.Task[ReplayJob | None]) -> None:
            self._running.pop(job_id, None)

        return forget

    async def stop(self) -> None:
        """Stop looking for jobs and stop the jobs running here; their leases are released
        so that another runner takes them over at once."""
        await super().stop()
        await cancel_and_wait(list(self._running.values()))
        for job_id, token in list(self._tokens.items()):
            with contextlib.suppress(PyMongoError):
                await self._release(job_id, token)

    async def _guarded(self, job_id: str) -> ReplayJob | None:
        try:
            return await self.run_job(job_id)
        except PyMongoError as error:
            log.warning(
                "replay interrupted: MongoDB unavailable", replay=job_id, error=describe(error)
            )
        except Exception:
            log.exception("replay failed", replay=job_id)
        return None

    async def run_job(self, job_id: str, on_progress: Progress | None = None) -> ReplayJob | None:
        """Run ``job_id`` until it completes, stops at its canary, is paused or cancelled;
        the job as it was left, or None when another runner holds it or it is not runnable.
        Cancelling this leaves the lease to expire, as the death of the process would."""
        token = await self._acquire(job_id)
        if token is None:
            return None
        self._tokens[job_id] = token
        job: ReplayJob | None = None
        while True:
            doc = await self._renew(job_id, token)
            if doc is None:
                log.warning("replay lease lost to another runner", replay=job_id)
                break
            job = job_from(doc)
            if on_progress is not None:
                shown = on_progress(job)
                if shown is not None:
                    await shown
                # What the callback saw may have led someone to pause or cancel the job.
                doc = await jobs_collection().find_one({"_id": job_id}) or doc
                job = job_from(doc)
            if job.state != "running" or not await self._step(job, doc):
                break
        self._tokens.pop(job_id, None)
        await self._release(job_id, token)
        last = await jobs_collection().find_one({"_id": job_id})
        return job if last is None else job_from(last)

    async def _step(self, job: ReplayJob, doc: dict[str, Any]) -> bool:
        """One step of a running job; False once the job needs nothing more now."""
        in_canary = not job.canary_passed and job.canary_size is not None
        limit = job.canary_size if in_canary else None
        item = await replay_items.next_pending(job.id, below=limit)
        if item is not None:
            await self._pace(job)
            outcome = await replay_items.run_item(job, item, self.publish)
            await recount(job.id)
            if outcome == "pending":  # the broker refused it: try again in a while
                await self.sleep(self.poll)
            return True
        settled = await replay_items.follow(job.id, below=limit)
        await recount(job.id)
        last = as_utc(doc.get("lastRepublishAt") or EPOCH)
        now = connection.server_clock().estimate()
        waited = now - last >= timedelta(seconds=job.follow_seconds)
        if not settled and not waited:
            await self.sleep(self.poll)
            return True
        if in_canary:
            return await self._judge_canary(job)
        await self._finish(job.id, "completed")
        return False

    async def _judge_canary(self, job: ReplayJob) -> bool:
        """Stop the job if more of its canary items failed again than it allows."""
        counts = await replay_items.canary_counts(job.id, job.canary_size or 0)
        run = counts["succeeded"] + counts["failed"] + counts["republished"]
        share = counts["failed"] / run if run else 0.0
        allowed = job.canary_max_failure_share or 0.0
        if share > allowed:
            reason = (
                f"canary: {counts['failed']} of the first {run} republished failed again "
                f"({share:.0%}, more than {allowed:.0%})"
            )
            await self._finish(job.id, "stopped", stopped_reason=reason)
            log.warning("replay stopped by its canary", replay=job.id, reason=reason)
            return False
        await jobs_collection().update_one(
            {"_id": job.id, "state": "running"}, {"$set": {"canaryPassed": True}}
        )
        return True

    async def _pace(self, job: ReplayJob) -> None:
        """Wait until the job's rate allows the next republish."""
        if job.rate_per_second is None:
            return
        now = self.clock()
        due = self._next_at.get(job.id, now)
        if due > now:
            await self.sleep(due - now)
        self._next_at[job.id] = max(due, now) + 1.0 / job.rate_per_second

    async def _acquire(self, job_id: str) -> str | None:
        token = uuid.uuid4().hex
        now = connection.server_clock().estimate()
        doc = await jobs_collection().find_one_and_update(
            {"_id": job_id, "state": {"$in": RUNNABLE}, "leaseExpiresAt": {"$lte": now}},
            {
                "$set": {
                    "state": "running",
                    "leaseOwner": self.owner,
                    "leaseToken": token,
                    "leaseExpiresAt": now + timedelta(seconds=self.lease),
                    "updatedAt": now,
                },
                "$min": {"startedAt": now},
            },
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else token

    async def _renew(self, job_id: str, token: str) -> dict[str, Any] | None:
        now = connection.server_clock().estimate()
        doc: dict[str, Any] | None = await jobs_collection().find_one_and_update(
            {"_id": job_id, "leaseToken": token},
            {"$set": {"leaseExpiresAt": now + timedelta(seconds=self.lease)}},
            return_document=ReturnDocument.AFTER,
        )
        return doc

    async def _release(self, job_id: str, token: str) -> None:
        now = connection.server_clock().estimate()
        await jobs_collection().update_one(
            {"_id": job_id, "leaseToken": token}, {"$set": {"leaseExpiresAt": now}}
        )

    async def _finish(self, job_id: str, state: str, stopped_reason: str | None = None) -> None:
        now = connection.server_clock().estimate()
        update: dict[str, Any] = {"state": state, "updatedAt": now, "finishedAt": now}
        if stopped_reason is not None:
            update["stoppedReason"] = stopped_reason
        if state == "completed":
            update["expiresAt"] = await expire_items(job_id, now)
        await jobs_collection().update_one({"_id": job_id, "state": "running"}, {"$set": update})
