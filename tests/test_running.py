"""Running a handler, without a broker or a store: each way a handler can end maps to one
result, and nothing a handler does can keep the worker waiting past its bounds."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from datetime import timedelta
from typing import Any

import pytest
import structlog

import tracker
from tests.rabbit import FAST, Broker
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.delivery import running
from tracker.delivery.running import ClaimLost, HandlerRun, Interrupted, Raised, Returned
from tracker.errors import HandlerEscape, HandlerInterrupt, TaskTimeout
from tracker.testing import capture_logs


def context() -> TaskContext:
    return TaskContext(
        payload={},
        task_id="t",
        execution_id="e",
        retry_count=0,
        max_retries=0,
        queue="q",
        metadata={},
    )


async def run(handler: Any, limit: float = 5.0, lost: bool = False) -> running.Ran:
    return await HandlerRun(handler, context(), lambda: lost).run(limit, "timed out")


async def test_a_return_and_an_exception() -> None:
    async def fine(task: TaskContext) -> int:
        return 7

    async def broken(task: TaskContext) -> None:
        raise KeyError("k")

    assert await run(fine) == Returned(7)
    result = await run(broken)
    assert isinstance(result, Raised)
    assert isinstance(result.error, KeyError)


async def test_every_line_a_handler_logs_carries_the_task_and_nothing_leaks_after() -> None:
    # Given: a handler logging through a logger of its own
    async def chatty(task: TaskContext) -> None:
        structlog.get_logger("mine").info("working")

    # When
    with capture_logs() as logs:
        await run(chatty)
        structlog.get_logger("after").info("outside")
    # Then
    working, outside = logs
    assert working["task_id"] == "t"
    assert working["execution_id"] == "e"
    assert working["queue"] == "q"
    assert working["retry_count"] == 0
    assert "task_id" not in outside


@pytest.mark.parametrize(
    "raised",
    [GeneratorExit(), asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(2)],
    ids=["generator-exit", "cancelled", "keyboard-interrupt", "system-exit"],
)
async def test_base_exceptions_become_results_and_never_reach_the_loop(
    raised: BaseException,
) -> None:
    # Given
    async def odd(task: TaskContext) -> None:
        raise raised

    # When
    result = await run(odd)
    # Then
    if isinstance(raised, KeyboardInterrupt | SystemExit):
        assert isinstance(result, Interrupted)
        assert result.interrupt.original is raised
        assert result.interrupt.exit_code == (130 if isinstance(raised, KeyboardInterrupt) else 2)
    else:
        assert isinstance(result, Raised)
        assert isinstance(result.error, HandlerEscape)
        assert result.error.error_type == type(raised).__name__


async def test_a_timeout_is_one_failure_even_when_the_handler_ignores_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a handler that swallows every cancellation
    monkeypatch.setattr(running, "CANCEL_GRACE", 0.2)
    stop = asyncio.Event()

    async def stubborn(task: TaskContext) -> str:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
        return "late"

    # When
    handler_run = HandlerRun(stubborn, context(), lambda: False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await handler_run.run(0.2, "make report timeout")
    elapsed = loop.time() - started
    stop.set()
    # Then: the timeout, once, and the worker did not wait for the handler
    assert isinstance(result, Raised)
    assert isinstance(result.error, TaskTimeout)
    assert str(result.error) == "make report timeout"
    assert handler_run.abandoned
    assert elapsed < 5 * (0.2 + 0.2)


async def test_stopping_the_worker_is_bounded_even_when_the_handler_ignores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(running, "CANCEL_GRACE", 0.2)
    release = asyncio.Event()

    async def stubborn(task: TaskContext) -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    handler_run = HandlerRun(stubborn, context(), lambda: False)
    outer = asyncio.create_task(handler_run.run(60, "t"))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert loop.time() - started < 5 * 0.2
    assert handler_run.abandoned
    release.set()


async def test_a_lost_claim_stops_the_handler() -> None:
    async def slow(task: TaskContext) -> None:
        await asyncio.sleep(60)

    handler_run = HandlerRun(slow, context(), lambda: True)
    pending = asyncio.create_task(handler_run.run(60, "t"))
    await asyncio.sleep(0.05)
    handler_run.cancel()
    assert await pending == ClaimLost()


def test_interrupt_exit_codes_are_never_zero() -> None:
    assert HandlerInterrupt(SystemExit(0)).exit_code == 1
    assert HandlerInterrupt(SystemExit(None)).exit_code == 1
    assert HandlerInterrupt(SystemExit("bye")).exit_code == 1
    assert HandlerInterrupt(SystemExit(4)).exit_code == 4
    assert HandlerInterrupt(KeyboardInterrupt()).exit_code == 130


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_worker_stop_returns_though_a_handler_ignores_cancellation(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a running handler that ignores cancellation
    monkeypatch.setattr(running, "CANCEL_GRACE", 0.3)
    queue = await broker.new_queue()
    started = asyncio.Event()
    release = asyncio.Event()

    @tracker.tracked(queue, retry_policy=FAST)
    async def stubborn(task: TaskContext) -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    worker = tracker.Worker([stubborn], broker.url, shutdown_timeout=0.3, lease=30)
    await worker.start()
    async with tracker.Publisher(broker.url) as pub:
        enqueued = await pub.enqueue(queue, {}, task_id=f"{queue}:s")
    await asyncio.wait_for(started.wait(), 10)
    # When
    loop = asyncio.get_running_loop()
    began = loop.time()
    await worker.stop()
    # Then: within the shutdown timeout and the grace (five times over), claim kept
    assert loop.time() - began < 5 * (0.3 + 0.3 + 1)
    execution = await TaskTracker.find_execution(enqueued.execution_id)
    assert execution is not None
    assert execution.status is TaskStatus.PROCESSING
    # the lease was not released: the still-running handler keeps it until it runs out
    assert execution.lease_expires_at is not None
    assert execution.lease_expires_at > utcnow() + timedelta(seconds=20)
    release.set()


# -- the first step runs at once ------------------------------------------------------------


async def test_a_handler_that_waits_for_nothing_needs_no_task_of_its_own() -> None:
    # Given: a handler that returns without awaiting anything
    seen: list[asyncio.Task[Any] | None] = []

    async def at_once(task: TaskContext) -> str:
        seen.append(asyncio.current_task())
        return "done"

    # When
    result = await run(at_once)
    # Then: it ran in the caller's task, and ended there
    assert result == Returned("done")
    assert seen == [asyncio.current_task()]


async def test_a_handler_that_waits_goes_on_in_a_task_of_its_own() -> None:
    # Given: a handler whose first step ends at an await
    tasks: list[asyncio.Task[Any] | None] = []

    async def later(task: TaskContext) -> int:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)  # a bare yield
        await asyncio.sleep(0.01)  # a timer's future
        tasks.append(asyncio.current_task())
        return 3

    # When
    result = await run(later)
    # Then: the steps after the first ran in another task, and the value came back
    assert result == Returned(3)
    assert tasks[0] is asyncio.current_task()
    assert tasks[1] is not asyncio.current_task()


CHOSEN: contextvars.ContextVar[str] = contextvars.ContextVar("chosen", default="unset")


@pytest.mark.parametrize("waits", [False, True])
async def test_what_a_handler_sets_in_its_context_stays_in_it(waits: bool) -> None:
    # Given: a handler that sets a context variable in its first step
    read_back: list[str] = []

    async def setter(task: TaskContext) -> None:
        CHOSEN.set("handler's")
        if waits:
            await asyncio.sleep(0.01)
        read_back.append(CHOSEN.get())

    # When
    await run(setter)
    # Then: the handler saw its own value throughout; the worker's context never did
    assert read_back == ["handler's"]
    assert CHOSEN.get() == "unset"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (KeyError("k"), KeyError),
        (asyncio.CancelledError(), HandlerEscape),
        (GeneratorExit(), HandlerEscape),
    ],
)
async def test_a_handler_raising_in_its_first_step_is_one_failure(
    raised: BaseException, expected: type[BaseException]
) -> None:
    async def raising(task: TaskContext) -> None:
        raise raised

    result = await run(raising)
    assert isinstance(result, Raised)
    assert isinstance(result.error, expected)


async def test_an_interrupt_in_the_first_step_stops_the_worker() -> None:
    async def interrupting(task: TaskContext) -> None:
        raise SystemExit(3)

    result = await run(interrupting)
    assert isinstance(result, Interrupted)
    assert result.interrupt.exit_code == 3


async def test_a_handler_started_at_once_still_times_out_and_is_cancelled() -> None:
    # Given: a handler whose first step returns at once, and then waits too long
    cancelled: list[bool] = []

    async def slow(task: TaskContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    # When
    result = await run(slow, limit=0.05)
    # Then: the timeout reached it through the task that went on with it
    assert isinstance(result, Raised)
    assert isinstance(result.error, TaskTimeout)
    assert cancelled == [True]
