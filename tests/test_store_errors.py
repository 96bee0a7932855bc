"""Store errors, classified once: a transient one requeues the delivery (tried again later),
a permanent one dead-letters the attempt with the reason, so the handler never reruns
because the tracker could not store something."""

from __future__ import annotations

import asyncio

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from tests.adapters import Driver
from tests.conftest import needs_in_memory
from tests.rabbit import FAST, Broker, wait_status
from tracker import ErrorCategory, TaskStatus, TaskTracker
from tracker.store import connection
from tracker.store.errors import describe, is_transient
from tracker.testing import RecordingMiddleware, store_failure

TRANSIENT = [
    AutoReconnect("connection reset"),
    NetworkTimeout("timed out"),
    ServerSelectionTimeoutError("no primary"),
    NotPrimaryError("not primary"),
    WTimeoutError("waiting for replication timed out", 64),
    WriteConcernError("waiting for replication timed out", 64),
    ExecutionTimeout("operation exceeded time limit", 50),
    OperationFailure("shutting down", 91),
    OperationFailure("stepped down", 189),
    OperationFailure("retry me", 999, {"errorLabels": ["RetryableWriteError"]}),
    OperationFailure("batch", 999, {"writeConcernError": {"code": 64}}),
]
PERMANENT = [
    DocumentTooLarge("BSON document too large"),
    InvalidDocument("cannot encode object"),
    OverflowError("MongoDB can only handle up to 8-byte ints"),
    WriteError("Document failed validation", 121),
    DuplicateKeyError("E11000 duplicate key error", 11000),
    OperationFailure("unknown operator: $nope", 2),
    OperationFailure("FieldPath field names may not start with '$'", 16410),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: f"{type(e).__name__}-{e}")
def test_transient_errors_are_tried_again(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: f"{type(e).__name__}-{e}")
def test_permanent_errors_are_not(error: BaseException) -> None:
    assert not is_transient(error)
    assert type(error).__name__ in describe(error)


def test_not_a_store_error_is_not_transient() -> None:
    assert not is_transient(ValueError("mine"))


@pytest.mark.rabbitmq
@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_a_transient_claim_error_requeues_then_the_task_runs_once(
    driver: Driver, broker: Broker
) -> None:
    # Given: the claim meets a primary stepping down, three times
    queue = await broker.new_queue()
    runs: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: runs.append(n), (recorder,), retry_policy=FAST)
    with store_failure(NotPrimaryError("stepping down"), ["find_one_and_update"], times=3):
        # When
        await broker.publish_raw(queue, {}, message_id="t-1", correlation_id=f"{queue}:t")
        await recorder.wait_for(store_unavailable=3, completed=1)
    # Then
    assert runs == [0]
    [done] = await TaskTracker.find_retry_chain(f"{queue}:t")
    assert done.status is TaskStatus.COMPLETED


@pytest.mark.rabbitmq
@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_a_permanent_claim_error_is_a_dead_letter_and_the_handler_never_runs(
    driver: Driver, broker: Broker
) -> None:
    # Given: every claim is refused as a bad request
    queue = await broker.new_queue()
    runs: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: runs.append(n), (recorder,), retry_policy=FAST)
    with store_failure(OperationFailure("unknown operator: $nope", 2), ["find_one_and_update"]):
        # When
        enqueued = await driver.enqueue(queue, {"n": 1}, task_id=f"{queue}:refused")
        await recorder.wait_for(rejected=1)
        await asyncio.sleep(0.5)
    # Then: recorded once with the reason; not run; not requeued
    assert runs == []
    assert recorder.outcomes["store_unavailable"] == 0
    [record] = await TaskTracker.find(
        {"queueName": queue, "claimedExecutionId": enqueued.execution_id}
    ).to_list()
    assert record.status is TaskStatus.DLQ
    assert record.error_category is ErrorCategory.INFRASTRUCTURE
    assert "the store refused this delivery: OperationFailure (code 2)" in (
        record.error_message or ""
    )
    assert await broker.depth(queue) == 0


@pytest.mark.rabbitmq
@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_an_outcome_the_store_refuses_dead_letters_the_attempt(
    driver: Driver, broker: Broker
) -> None:
    # Given: the completion write fails for good (the collection's validator refuses it)
    queue = await broker.new_queue()
    runs: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: runs.append(n), (recorder,), retry_policy=FAST)
    with store_failure(WriteError("Document failed validation", 121), ["update_one"], times=1):
        # When
        await driver.enqueue(queue, {}, task_id=f"{queue}:w")
        [dead] = await wait_status(f"{queue}:w", "dlq")
        await recorder.wait_for(dead_lettered=1)
    # Then: the handler ran once, the attempt is a dead letter that says why
    assert runs == [0]
    assert dead.error_category is ErrorCategory.INFRASTRUCTURE
    assert (dead.error_message or "").startswith(
        "the outcome could not be stored: WriteError (code 121)"
    )


@pytest.mark.rabbitmq
@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_a_delivery_nothing_of_which_can_be_stored_is_parked_in_the_dlq(
    driver: Driver, broker: Broker
) -> None:
    # Given: every update is refused for good, so not even the dead letter can be written
    queue = await broker.new_queue()
    runs: list[int] = []
    recorder = RecordingMiddleware()
    await driver.start(queue, lambda p, n: runs.append(n), (recorder,), retry_policy=FAST)
    with store_failure(WriteError("Document failed validation", 121), ["update_one"]):
        # When
        await driver.enqueue(queue, {}, task_id=f"{queue}:p")
        await recorder.wait_for(parked=1)
        await broker.wait_depth(f"{queue}.dlq", 1)
        await asyncio.sleep(0.5)
    # Then: the broker holds it in the queue's .dlq (tracker dlq import reads it); no loop
    assert runs == [0]
    assert recorder.outcomes["parked"] == 1


def test_store_failure_needs_the_in_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.store import connection

    monkeypatch.setattr(connection, "is_in_memory", lambda: False)
    with pytest.raises(RuntimeError, match="in-memory"), store_failure(AutoReconnect("x")):
        pass


@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_an_applied_failure_writes_then_raises_and_a_read_just_raises() -> None:
    # Given: writes whose reply is lost after they are applied
    collection = connection.collection()
    with store_failure(AutoReconnect("reply lost"), ["insert_one", "find"], applied=True):
        # When / Then: the write raises, the read raises instead of returning a cursor
        with pytest.raises(AutoReconnect):
            await collection.insert_one({"_id": "applied", "taskId": "t"})
        with pytest.raises(AutoReconnect):
            collection.find({})
    # and the write was applied
    assert await collection.find_one({"_id": "applied"}) is not None
