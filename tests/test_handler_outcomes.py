"""Every way a handler can end has one recorded outcome, the delivery is settled once, and
the worker goes on consuming (or, asked to stop, stops without recording a failure). Each
test runs on both adapters (tests/adapters.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.adapters import Driver, sample
from tests.rabbit import FAST, Broker, wait_status
from tracker import ErrorCategory, TaskStatus, TaskTracker
from tracker.testing import RecordingMiddleware

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


class StrRaises(ValueError):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def unstorable_int(payload: Any, n: int) -> Any:
    return {"big": 2**70}


def lone_surrogate(payload: Any, n: int) -> Any:
    return "half a pair: \ud800"


def oversized(payload: Any, n: int) -> Any:
    return "x" * (80 * 1024)


class Unencodable:
    def __str__(self) -> str:
        raise RuntimeError("cannot be shown")


def unencodable(payload: Any, n: int) -> Any:
    return {"thing": Unencodable()}


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (unstorable_int, "OverflowError"),
        (lone_surrogate, "UnicodeEncodeError"),
        (oversized, "over the 65536-byte limit"),
        (unencodable, "it is not JSON: RuntimeError"),
    ],
    ids=["int-beyond-64-bits", "lone-surrogate", "over-the-bound", "str-raises"],
)
async def test_a_result_that_cannot_be_stored_is_a_failure_not_retried(
    driver: Driver, broker: Broker, behaviour: Any, why: str
) -> None:
    # Given: a handler whose result MongoDB cannot hold, and retries to spare
    queue = await broker.new_queue()
    recorder = RecordingMiddleware()
    await driver.start(queue, behaviour, (recorder,), retry_policy=FAST, max_retries=3)
    # When
    await driver.enqueue(queue, {}, task_id=f"{queue}:r")
    [dead] = await wait_status(f"{queue}:r", "dlq")
    # Then: dead-lettered at once (the same input gives the same result), and consuming goes on
    assert dead.error_category is ErrorCategory.PROCESSING
    assert (dead.error_message or "").startswith("result could not be stored: ")
    assert why in (dead.error_message or "")
    assert dead.result is None
    await driver.enqueue(queue, {}, task_id=f"{queue}:next")
    await recorder.wait_for(dead_lettered=2)


def raises_unprintable(payload: Any, n: int) -> None:
    raise StrRaises()


def raises_surrogates(payload: Any, n: int) -> None:
    raise ValueError("bad \udcff byte " + "y" * 5000)


def raises_generator_exit(payload: Any, n: int) -> None:
    raise GeneratorExit()


def raises_cancelled(payload: Any, n: int) -> None:
    raise asyncio.CancelledError()


@pytest.mark.parametrize(
    ("behaviour", "category", "message", "error_type"),
    [
        (raises_unprintable, ErrorCategory.VALIDATION, "StrRaises: <unprintable>", "StrRaises"),
        (raises_surrogates, ErrorCategory.VALIDATION, "ValueError: bad \\udcff byte", "ValueError"),
        (raises_generator_exit, ErrorCategory.UNKNOWN, "handler raised GeneratorExit", None),
        (raises_cancelled, ErrorCategory.UNKNOWN, "handler raised CancelledError", None),
    ],
    ids=["str-raises", "lone-surrogates", "generator-exit", "cancelled-error"],
)
async def test_odd_exceptions_are_recorded_as_one_failure(
    driver: Driver,
    broker: Broker,
    behaviour: Any,
    category: ErrorCategory,
    message: str,
    error_type: str | None,
) -> None:
    queue = await broker.new_queue()
    recorder = RecordingMiddleware()
    await driver.start(queue, behaviour, (recorder,), retry_policy=FAST, max_retries=0)
    await driver.enqueue(queue, {}, task_id=f"{queue}:x")
    [dead] = await wait_status(f"{queue}:x", "dlq")
    assert dead.error_category is category
    assert (dead.error_message or "").startswith(message)
    assert len(dead.error_message or "") <= 2048
    expected_type = error_type or message.rsplit(" ", 1)[-1]
    assert dead.error_type == expected_type
    # the consumer goes on
    await driver.enqueue(queue, {}, task_id=f"{queue}:after")
    await recorder.wait_for(dead_lettered=2)


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt(), SystemExit(0), SystemExit(3)],
    ids=["keyboard-interrupt", "system-exit-0", "system-exit-3"],
)
async def test_an_interrupt_stops_the_worker_without_a_failure(
    driver: Driver, broker: Broker, interrupt: BaseException
) -> None:
    # Given: a handler that raises KeyboardInterrupt or SystemExit on its first run
    queue = await broker.new_queue()
    runs: list[int] = []

    def interrupting(payload: Any, n: int) -> str:
        runs.append(n)
        if len(runs) == 1:
            raise interrupt
        return "done"

    await driver.start(queue, interrupting, (), retry_policy=FAST, lease=30)
    enqueued = await driver.enqueue(queue, {}, task_id=f"{queue}:i")
    # When: the consumer stops by itself, non-zero
    code = await driver.stopped_by_itself(timeout=30)
    assert code != 0
    if isinstance(interrupt, SystemExit) and interrupt.code:
        assert code == interrupt.code
    # Then: no failure recorded, the claim released, and the next consumer runs the task
    execution = await TaskTracker.find_execution(enqueued.execution_id)
    assert execution is not None
    assert execution.status is TaskStatus.PROCESSING
    assert execution.error_message is None
    await driver.stop()
    await driver.start(queue, interrupting, (), retry_policy=FAST, lease=30)
    [done] = await wait_status(f"{queue}:i", "completed", timeout=30)
    assert done.execution_id == enqueued.execution_id
    assert runs == [0, 0]
    assert TaskStatus.FAILED not in [h.status for h in done.history]


async def test_a_retry_carries_the_payload_as_received(driver: Driver, broker: Broker) -> None:
    # Given: a handler that changes its payload, then fails
    queue = await broker.new_queue()
    seen: list[Any] = []

    def mutating(payload: Any, n: int) -> None:
        seen.append(dict(payload))
        payload["n"] = 999
        payload["added"] = True
        if n == 0:
            from tracker import TransientError

            raise TransientError("once")

    await driver.start(queue, mutating, (), retry_policy=FAST, max_retries=1)
    # When
    await driver.enqueue(queue, {"n": 1}, task_id=f"{queue}:m")
    chain = await wait_status(f"{queue}:m", "completed")
    # Then
    assert seen == [{"n": 1}, {"n": 1}]
    assert chain[1].payload == {"n": 1}


async def test_a_message_naming_another_tasks_execution_is_a_validation_failure(
    driver: Driver, broker: Broker
) -> None:
    # Given: a finished execution of one task, and a message of another task reusing its id
    queue = await broker.new_queue()
    recorder = RecordingMiddleware()
    runs: list[Any] = []
    await driver.start(queue, lambda p, n: runs.append(p), (recorder,), retry_policy=FAST)
    first = await driver.enqueue(queue, {"who": "first"}, task_id=f"{queue}:a")
    await recorder.wait_for(completed=1)
    # When
    await broker.publish_raw(
        queue, {"who": "intruder"}, message_id=first.execution_id, correlation_id=f"{queue}:b"
    )
    await recorder.wait_for(rejected=1)
    # Then: not run, not a duplicate: a rejected delivery of its own; the owner untouched
    assert runs == [{"who": "first"}]
    [rejected] = await TaskTracker.find(
        {"queueName": queue, "claimedExecutionId": first.execution_id}
    ).to_list()
    assert rejected.status is TaskStatus.DLQ
    assert "belongs to another task" in (rejected.error_message or "")
    owner = await TaskTracker.find_execution(first.execution_id)
    assert owner is not None
    assert owner.status is TaskStatus.COMPLETED
    assert recorder.counts["on_duplicate"] == 0


async def test_a_message_on_another_queue_cannot_take_an_execution_over(
    driver: Driver, broker: Broker
) -> None:
    # Given: an execution queued on queue B, and its message sent to queue A
    queue_a, queue_b = await broker.new_queue(), await broker.new_queue()
    recorder = RecordingMiddleware()
    runs: list[Any] = []
    await driver.start(queue_a, lambda p, n: runs.append(p), (recorder,), retry_policy=FAST)
    other = await driver.enqueue(queue_b, {"for": "b"}, task_id=f"{queue_b}:t")
    # When
    await broker.publish_raw(
        queue_a,
        {"for": "b"},
        headers={"x-task-id": other.task_id, "x-execution-id": other.execution_id},
        message_id=other.execution_id,
        correlation_id=other.task_id,
    )
    await recorder.wait_for(rejected=1)
    # Then: queue A's handler did not run it; it still waits on queue B
    assert runs == []
    owner = await TaskTracker.find_execution(other.execution_id)
    assert owner is not None
    assert (owner.status, owner.queue_name) == (TaskStatus.QUEUED, queue_b)


async def test_a_redelivered_rejection_is_recorded_once(driver: Driver, broker: Broker) -> None:
    queue = await broker.new_queue()
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: None, (recorder,))
    for _ in range(3):
        await broker.publish_raw(queue, b"\xff not json", message_id="same-poison")
    await recorder.wait_for(rejected=1, duplicate=2)
    records = await TaskTracker.find({"queueName": queue}).to_list()
    assert len(records) == 1
    assert sample(driver, "tracker_rejected_messages_total", queue=queue) == 1
