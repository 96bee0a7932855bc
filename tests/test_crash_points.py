"""Each crash point of docs/crash-points.md: a worker dies there (its connection closes with
nothing acked, its handler cancelled, its claim not released) and a second worker finishes
the task. No completed task runs twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import tracker
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.delivery.decision import Decision
from tracker.delivery.envelope import Envelope
from tracker.store.leases import release_claim
from tracker.testing import RecordingMiddleware

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


class CrashAt(tracker.Middleware):
    """Freezes the worker at ``hook`` (for the outcome ``when``, if given), as if the process
    died there, and signals the test."""

    def __init__(self, hook: str, when: str | None = None) -> None:
        self.hook = hook
        self.when = when
        self.reached = asyncio.Event()

    async def _maybe_crash(self, hook: str, outcome: str | None = None) -> None:
        matches = hook == self.hook and (self.when is None or outcome == self.when)
        if matches and not self.reached.is_set():
            self.reached.set()
            await asyncio.Event().wait()  # frozen until the worker is aborted

    async def before_process(self, envelope: Envelope) -> None:
        await self._maybe_crash("before_process")

    async def after_claim(self, task: TaskContext) -> None:
        await self._maybe_crash("after_claim")

    async def after_handler(self, task: TaskContext, error: BaseException | None) -> None:
        await self._maybe_crash("after_handler")

    async def after_outcome(self, task: TaskContext, decision: Decision) -> None:
        await self._maybe_crash("after_outcome", decision.outcome)

    async def before_ack(self, envelope: Envelope, decision: Decision) -> None:
        await self._maybe_crash("before_ack", decision.outcome)


CRASH_POINTS = [
    # (hook, outcome, fail first attempt, handler runs of the first execution after recovery)
    pytest.param("before_process", None, False, 1, id="received-not-claimed"),
    pytest.param("after_claim", None, False, 1, id="claimed-handler-not-run"),
    pytest.param("after_handler", None, False, 2, id="handler-done-outcome-not-written"),
    pytest.param("after_outcome", "completed", False, 1, id="completed-not-acked"),
    pytest.param("before_ack", "completed", False, 1, id="completed-acked-pending"),
    pytest.param("after_outcome", "retried", True, 1, id="failed-retry-not-published"),
    pytest.param("before_ack", "retried", True, 1, id="retry-published-not-acked"),
]


@pytest.mark.parametrize(("hook", "outcome", "fail_first", "first_runs"), CRASH_POINTS)
async def test_a_second_worker_finishes_after_a_crash(
    broker: Broker, hook: str, outcome: str | None, fail_first: bool, first_runs: int
) -> None:
    # Given: a worker that will die at the crash point
    queue = await broker.new_queue()
    runs: Counter[str] = Counter()

    @tracker.tracked(queue, max_retries=3, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        runs[task.execution_id] += 1
        if fail_first and task.retry_count == 0:
            raise tracker.TransientError("first attempt fails")
        return "done"

    crash = CrashAt(hook, outcome)
    first = tracker.Worker([handle], broker.url, lease=1.0, middleware=[crash])
    await first.start()
    async with tracker.Publisher(broker.url) as pub:
        enqueued = await pub.enqueue(queue, {"n": 1}, task_id="reports:crash")
    async with asyncio.timeout(10):
        await crash.reached.wait()
    # When: it dies there, and a second worker takes the queue
    await first.abort()
    recorder = RecordingMiddleware()
    async with tracker.Worker([handle], broker.url, lease=1.0, middleware=[recorder]):
        chain = await wait_status("reports:crash", "completed")
        await broker.wait_depth(queue, 0)
    # Then
    completed = [doc for doc in chain if doc.status is TaskStatus.COMPLETED]
    assert len(completed) == 1
    assert runs[enqueued.execution_id] == first_runs
    assert all(count == 1 for eid, count in runs.items() if eid != enqueued.execution_id)
    assert [doc.retry_count for doc in chain] == ([0, 1] if fail_first else [0])
    assert await broker.dlq_depth(queue) == 0


async def test_a_retry_lost_between_its_two_writes_is_recreated(broker: Broker) -> None:
    # Given: the first attempt failed and the worker died before the retry was stored
    queue = await broker.new_queue()
    runs: Counter[int] = Counter()

    @tracker.tracked(queue, max_retries=3, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        runs[task.retry_count] += 1
        if task.retry_count == 0:
            raise tracker.TransientError("first attempt fails")

    crash = CrashAt("after_outcome", "retried")
    first = tracker.Worker([handle], broker.url, lease=1.0, middleware=[crash])
    await first.start()
    async with tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id="reports:lost-retry")
    async with asyncio.timeout(10):
        await crash.reached.wait()
    await first.abort()
    failed = (await TaskTracker.find_retry_chain("reports:lost-retry"))[0]
    await TaskTracker.get_pymongo_collection().delete_one({"executionId": failed.next_execution_id})
    # When
    async with tracker.Worker([handle], broker.url, lease=1.0):
        chain = await wait_status("reports:lost-retry", "completed")
    # Then: the redelivered failure recreated the retry under the recorded id
    assert [d.status for d in chain] == [TaskStatus.FAILED, TaskStatus.COMPLETED]
    assert chain[1].execution_id == failed.next_execution_id
    assert runs == {0: 1, 1: 1}


async def test_dead_letter_recorded_before_the_crash_is_not_rerun(broker: Broker) -> None:
    queue = await broker.new_queue()
    runs: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        runs.append(task.execution_id)
        raise tracker.ValidationError("missing field 'from'")

    crash = CrashAt("after_outcome", "dead_lettered")
    first = tracker.Worker([handle], broker.url, lease=1.0, middleware=[crash])
    await first.start()
    async with tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id="reports:dead")
    async with asyncio.timeout(10):
        await crash.reached.wait()
    await first.abort()
    recorder = RecordingMiddleware()
    async with tracker.Worker([handle], broker.url, lease=1.0, middleware=[recorder]):
        await recorder.wait_for(duplicate=1)
    chain = await TaskTracker.find_retry_chain("reports:dead")
    assert [d.status for d in chain] == [TaskStatus.DLQ]
    assert len(runs) == 1


async def test_graceful_stop_leaves_unfinished_work_to_the_next_worker(broker: Broker) -> None:
    # Given: a handler slower than the shutdown timeout
    queue = await broker.new_queue()
    runs: list[int] = []
    release = asyncio.Event()

    @tracker.tracked(queue, retry_policy=FAST)
    async def slow(task: TaskContext) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            await asyncio.sleep(60)
        release.set()

    recorder = RecordingMiddleware()
    first = tracker.Worker(
        [slow], broker.url, lease=30.0, shutdown_timeout=0.2, middleware=[recorder]
    )
    await first.start()
    async with tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id="reports:slow")
    async with asyncio.timeout(5):
        while recorder.counts["after_claim"] < 1:
            await asyncio.sleep(0.02)
    # When: it stops; the claim is released though its lease had 30 s left
    await first.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with tracker.Worker([slow], broker.url, lease=30.0):
        chain = await wait_status("reports:slow", "completed")
    # Then: the next worker took it over at once
    assert loop.time() - started < 5
    assert [d.status for d in chain] == [TaskStatus.COMPLETED]
    assert len(runs) == 2


async def test_a_stale_worker_cannot_overwrite_the_new_holder(broker: Broker) -> None:
    # Given: a handler that outlives its lease because the heartbeat cannot renew it
    queue = await broker.new_queue()
    outcomes: list[Any] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        await asyncio.sleep(0.3)
        outcomes.append(task.execution_id)
        return "late"

    recorder = RecordingMiddleware()
    async with (
        tracker.Worker([handle], broker.url, lease=3.0, middleware=[recorder]),
        tracker.Publisher(broker.url) as pub,
    ):
        enqueued = await pub.enqueue(queue, {}, task_id="reports:stale")
        async with asyncio.timeout(5):
            while recorder.counts["after_claim"] < 1:
                await asyncio.sleep(0.01)
        # When: another holder takes the execution over while the handler still runs
        await release_claim(
            enqueued.execution_id,
            (await TaskTracker.find_execution(enqueued.execution_id)).claim_token or "",  # type: ignore[union-attr]
        )
        taken = await tracker.claim(enqueued.execution_id, worker="other", lease=30)
        assert taken.won
        await recorder.wait_for(stale=1)
    # Then: the late completion was refused; the execution is still the other holder's
    execution = await TaskTracker.find_execution(enqueued.execution_id)
    assert execution is not None
    assert execution.status is TaskStatus.PROCESSING
    assert execution.claimed_by == "other"
