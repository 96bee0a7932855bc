"""Background work stops when told, even when something inside it swallows the cancellation,
as PyMongo's async client now and then does: the periodic jobs
(``tracker.service.periodic``) and a claim's lease renewals (``tracker.delivery.leases``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tracker.delivery import leases
from tracker.service import cancelling as cancellation
from tracker.service.periodic import Periodic


class Job(Periodic):
    """Counts its ticks; each tick waits ``wait`` seconds, swallowing a cancellation if told
    to, then waits ``after`` seconds more."""

    def __init__(self, *, swallow: bool = False, wait: float = 0.0, after: float = 0.0) -> None:
        super().__init__(interval=3600)
        self.swallow = swallow
        self.wait = wait
        self.after = after
        self.ticks = 0
        self.started = asyncio.Event()

    async def tick(self) -> None:
        self.ticks += 1
        self.started.set()
        try:
            await asyncio.sleep(self.wait)
        except asyncio.CancelledError:
            if not self.swallow:
                raise
        await asyncio.sleep(self.after)


# A stop takes at most one re-cancelling pause (0.5 s) here; ten times that, for busy cores.
STOP_BOUND_SECONDS = 5.0


async def stopped(job: Job) -> None:
    """Start ``job``, wait for its first tick, and stop it within the bound. (Not with
    ``wait_for``/``timeout``: a stop that swallowed their cancellation would pass them.)"""
    job.start()
    await job.started.wait()
    task = job._task
    loop = asyncio.get_running_loop()
    began = loop.time()
    stopping = asyncio.ensure_future(job.stop())
    await asyncio.wait([stopping], timeout=STOP_BOUND_SECONDS * 4)
    assert stopping.done()
    assert task is not None
    assert task.done()
    assert loop.time() - began < STOP_BOUND_SECONDS


async def test_a_job_between_ticks_stops_at_once() -> None:
    # Given: a job asleep until its next tick, an hour away
    job = Job()
    # When / Then
    await stopped(job)
    assert job.ticks == 1


async def test_a_job_whose_tick_swallows_the_cancellation_stops_after_that_tick() -> None:
    # Given: a tick that ignores being cancelled and completes, as an operation of PyMongo's
    # async client now and then does
    job = Job(swallow=True, wait=60)
    # When / Then: stopped without waiting the hour to the next tick, and never ticking again
    await stopped(job)
    assert job.ticks == 1


async def test_a_tick_that_swallows_the_cancellation_and_goes_on_waiting_is_cancelled_again() -> (
    None
):
    # Given: a tick that swallows the cancellation, then waits a minute more
    job = Job(swallow=True, wait=60, after=60)
    # When / Then: the second cancellation ends it
    await stopped(job)
    assert job.ticks == 1


async def test_stopping_a_job_never_started_or_stopped_twice_does_nothing() -> None:
    job = Job()
    await job.stop()
    await stopped(job)
    await job.stop()
    assert job.ticks == 1


async def test_a_lease_renewal_that_swallows_the_stop_renews_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a heartbeat whose renewal ignores being cancelled and completes, still held
    renewals: list[str] = []
    renewing = asyncio.Event()

    async def renew(execution_id: str, token: str, lease: float, task_id: str | None) -> bool:
        renewals.append(execution_id)
        renewing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        return True

    monkeypatch.setattr(leases, "renew_lease", renew)
    lost: list[bool] = []
    heartbeat = leases.Heartbeat("e1", "t1", 0.03, lambda: lost.append(True), "task:1")
    heartbeat.start()
    await renewing.wait()
    # When: the handler ends while the renewal is on its way
    await heartbeat.stop()
    await asyncio.sleep(0.2)  # twenty renewal periods
    # Then: no renewal after it, and no lost claim reported
    assert renewals == ["e1"]
    assert lost == []


async def test_tasks_that_swallow_cancellations_are_cancelled_until_they_end() -> None:
    # Given: tasks that swallow one, two or no cancellations, and one that fails when cancelled
    swallowed: list[int] = []

    async def stubborn(times: int) -> None:
        for _ in range(times):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)
            swallowed.append(times)
        await asyncio.sleep(60)

    async def failing() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    tasks = [asyncio.ensure_future(stubborn(n)) for n in (0, 1, 2)]
    tasks.append(asyncio.ensure_future(failing()))
    await asyncio.sleep(0)
    # When
    await asyncio.wait_for(cancellation.cancel_and_wait(tasks), STOP_BOUND_SECONDS)
    # Then: every one ended; the failure stays in its task, retrieved, not raised here
    assert all(task.done() for task in tasks)
    assert sorted(swallowed) == [1, 2, 2]
    assert isinstance(tasks[-1].exception(), RuntimeError)
