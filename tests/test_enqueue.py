"""Enqueueing under publishes that fail: never delete a record whose message the broker may
hold, and never let a caller's value become a query operator."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockCollection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
)

import tracker
from tests.adapters import Driver
from tests.conftest import needs_in_memory
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.delivery.envelope import OutgoingMessage
from tracker.enqueue import Enqueuer
from tracker.errors import PublishError
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.service.sweeper import Sweeper
from tracker.store import connection
from tracker.testing import RecordingMiddleware, capture_logs, store_failure

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


class LostConfirm(AioPikaTransport):
    """Publishes, then loses the broker's confirm (``maybe_published``), or has the message
    returned unroutable (not published), for the first ``times`` publishes."""

    def __init__(self, url: str, *, returned: bool = False, times: int = 1) -> None:
        super().__init__(url)
        self.returned = returned
        self.times = times

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        if self.times <= 0:
            return await super().publish(message, confirm=confirm)
        self.times -= 1
        if self.returned:
            raise PublishError("returned", maybe_published=False)
        await super().publish(message, confirm=confirm)
        raise PublishError("the connection closed before the confirm arrived")


async def test_a_lost_confirm_keeps_the_execution_and_it_runs_once(broker: Broker) -> None:
    # Given: a publish whose confirm is lost although the broker has the message
    queue = await broker.new_queue()
    runs: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        runs.append(task.execution_id)

    transport = LostConfirm(broker.url)
    await transport.open()
    try:
        enqueuer = Enqueuer(transport)
        # When
        with pytest.raises(PublishError, match="is kept") as raised:
            await enqueuer.enqueue(queue, {"n": 1}, task_id=f"{queue}:lost")
        # Then: the error names the execution, which is kept, marked unconfirmed
        assert raised.value.task_id == f"{queue}:lost"
        assert raised.value.maybe_published
        kept = await TaskTracker.find_execution(raised.value.execution_id or "")
        assert kept is not None
        assert kept.status is TaskStatus.QUEUED
        assert kept.publish_unconfirmed_at is not None
        # and enqueueing again sends it again (no new execution), then clears the mark
        again = await enqueuer.enqueue(queue, {"n": 1}, task_id=f"{queue}:lost")
        assert again.deduplicated
        assert again.execution_id == kept.execution_id
        resent = await TaskTracker.find_execution(kept.execution_id)
        assert resent is not None
        assert resent.publish_unconfirmed_at is None
    finally:
        await transport.close()
    recorder = RecordingMiddleware()
    async with tracker.Worker([handle], broker.url, middleware=[recorder]):
        await recorder.wait_for(completed=1, duplicate=1)
    # the two copies ran the handler once
    assert runs == [kept.execution_id]


def lost_confirms(url: str, times: int) -> tracker.Publisher:
    """A Publisher (not open yet) whose first ``times`` publishes lose their confirm."""
    pub = tracker.Publisher(url)
    pub.transport = LostConfirm(url, times=times)
    pub._enqueuer = Enqueuer(pub.transport)
    return pub


async def test_a_publisher_whose_confirm_is_lost_publishes_again_once_as_its_own(
    broker: Broker,
) -> None:
    # Given: a Publisher whose first publish loses its confirm (the message did arrive)
    queue = await broker.new_queue()
    runs: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        runs.append(task.execution_id)

    pub = lost_confirms(broker.url, times=1)
    async with pub:
        # When
        result = await pub.enqueue(queue, {"n": 1}, task_id=f"{queue}:again")
    # Then: one execution, reported as this enqueue's own, confirmed now
    assert not result.deduplicated
    [execution] = await TaskTracker.find({"taskId": f"{queue}:again"}).to_list()
    assert execution.execution_id == result.execution_id
    assert execution.publish_unconfirmed_at is None
    await broker.wait_depth(queue, 2)
    # and its two copies run the handler once
    recorder = RecordingMiddleware()
    async with tracker.Worker([handle], broker.url, middleware=[recorder]):
        await recorder.wait_for(completed=1, duplicate=1)
    assert runs == [result.execution_id]


async def test_a_publish_lost_twice_is_not_tried_a_third_time(broker: Broker) -> None:
    queue = await broker.new_queue()
    async with lost_confirms(broker.url, times=2) as pub:
        with pytest.raises(PublishError, match="is kept") as raised:
            await pub.enqueue(queue, {"n": 1}, task_id=f"{queue}:twice")
    assert raised.value.maybe_published
    await broker.wait_depth(queue, 2)


async def test_a_returned_message_rolls_the_execution_back(broker: Broker) -> None:
    queue = await broker.new_queue()
    transport = LostConfirm(broker.url, returned=True)
    await transport.open()
    try:
        with pytest.raises(PublishError, match="rolled back") as raised:
            await Enqueuer(transport).enqueue(queue, {}, task_id=f"{queue}:returned")
    finally:
        await transport.close()
    assert not raised.value.maybe_published
    assert await TaskTracker.find({"taskId": f"{queue}:returned"}).to_list() == []


async def test_the_sweeper_publishes_an_unconfirmed_execution_again(broker: Broker) -> None:
    # Given: an execution whose publish was not confirmed, and whose message was lost
    queue = await broker.new_queue()
    transport = LostConfirm(broker.url)
    await transport.open()
    try:
        with pytest.raises(PublishError) as raised:
            await Enqueuer(transport).enqueue(queue, {"n": 2}, task_id=f"{queue}:swept")
        await broker.wait_depth(queue, 1)
        await (await broker.channel.get_queue(queue)).purge()  # the message is gone after all
        published: list[OutgoingMessage] = []

        async def publish(message: OutgoingMessage) -> None:
            published.append(message)

        @tracker.tracked(queue)
        async def handle(task: TaskContext) -> None: ...

        from tracker.delivery.outcomes import Outcomes

        sweeper = Sweeper({queue: Outcomes(handle, "w")}, publish, unconfirmed_after=0)
        # When
        report = await sweeper.sweep()
    finally:
        await transport.close()
    # Then
    assert report.republished == 1
    assert [m.message_id for m in published] == [raised.value.execution_id]
    swept = await TaskTracker.find_execution(raised.value.execution_id or "")
    assert swept is not None
    assert swept.publish_unconfirmed_at is None


# What a replica set answers when a write was applied on the primary but not replicated in
# time: the batch of creations is stored, and the enqueues see an error.
REPLICATION_TIMED_OUT = BulkWriteError(
    {
        "writeErrors": [],
        "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}],
        "nInserted": 0,
        "nUpserted": 1,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
)


def stored_despite_a_write_concern_error() -> contextlib.ExitStack:
    """The next creation is stored, and its enqueue raises the replica set's write concern
    error (expected: the block passes only if it is raised)."""
    stack = contextlib.ExitStack()
    stack.enter_context(store_failure(REPLICATION_TIMED_OUT, ["bulk_write"], times=1, applied=True))
    stack.enter_context(pytest.raises(WriteConcernError))
    return stack


@needs_in_memory
async def test_a_creation_stored_despite_its_error_is_published_by_the_next_enqueue(
    broker: Broker, driver: Driver
) -> None:
    # Given: an enqueue whose creation is stored but answered with a write concern error
    # (through either publisher: aio-pika's Publisher, pika's SyncPublisher)
    queue = await broker.new_queue()
    task_id = f"{queue}:concern"
    with stored_despite_a_write_concern_error():
        await driver.enqueue(queue, {"n": 1}, task_id=task_id)
    [stored] = await TaskTracker.find({"taskId": task_id}).to_list()
    # When: the caller enqueues the task again
    again = await driver.enqueue(queue, {"n": 1}, task_id=task_id)

    # Then: the stored execution was marked, and is the one published now, once
    assert stored.status is TaskStatus.QUEUED
    assert stored.publish_unconfirmed_at is not None
    assert again.execution_id == stored.execution_id
    await broker.wait_depth(queue, 1)
    confirmed = await TaskTracker.find_execution(stored.execution_id)
    assert confirmed is not None
    assert confirmed.publish_unconfirmed_at is None


@needs_in_memory
async def test_a_creation_never_stored_is_created_again_by_the_next_enqueue(
    broker: Broker,
) -> None:
    # Given: an enqueue whose creation never reached MongoDB
    queue = await broker.new_queue()
    task_id = f"{queue}:unreached"
    async with tracker.Publisher(broker.url) as pub:
        with store_failure(AutoReconnect("no primary"), ["bulk_write"], times=1):
            with pytest.raises(AutoReconnect):
                await pub.enqueue(queue, {"n": 1}, task_id=task_id)
            # When
            again = await pub.enqueue(queue, {"n": 1}, task_id=task_id)

    # Then: nothing was marked; a new execution, published
    assert not again.deduplicated
    [stored] = await TaskTracker.find({"taskId": task_id}).to_list()
    assert stored.execution_id == again.execution_id
    assert stored.publish_unconfirmed_at is None
    await broker.wait_depth(queue, 1)


@needs_in_memory
async def test_a_creation_that_cannot_be_marked_either_is_logged_for_the_sweeper(
    broker: Broker,
) -> None:
    # Given: the creation is stored despite its error, and MongoDB is gone for the marking
    queue = await broker.new_queue()
    task_id = f"{queue}:unmarked"
    async with tracker.Publisher(broker.url) as pub:
        with (
            stored_despite_a_write_concern_error(),
            store_failure(AutoReconnect("gone"), ["update_one"], times=1),
            capture_logs() as logs,
        ):
            # When
            await pub.enqueue(queue, {"n": 1}, task_id=task_id)

    # Then: the first error is raised, and the execution left unmarked is named
    [stored] = await TaskTracker.find({"taskId": task_id}).to_list()
    assert stored.publish_unconfirmed_at is None
    [warning] = [e for e in logs if "stored unpublished" in e["event"]]
    assert warning["execution_id"] == stored.execution_id
    assert "WriteConcernError" in warning["cause"]
    assert "AutoReconnect" in warning["error"]


@needs_in_memory
@pytest.mark.parametrize(
    "never_sent",
    [ServerSelectionTimeoutError("no primary"), WaitQueueTimeoutError("pool exhausted")],
    ids=["server selection", "connection pool"],
)
async def test_a_creation_that_never_left_the_process_is_not_marked(
    broker: Broker, never_sent: Exception
) -> None:
    # Given: the creation's write fails before it is sent; any marking would fail loudly
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        with (
            store_failure(never_sent, ["bulk_write"], times=1),
            store_failure(RuntimeError("a marking was tried"), ["update_one"]),
            capture_logs() as logs,
            pytest.raises(type(never_sent)),
        ):
            # When
            await pub.enqueue(queue, {"n": 1}, task_id=f"{queue}:unsent")

    # Then: the error as it was, no second wait for MongoDB, no warning
    assert not [e for e in logs if "stored unpublished" in e["event"]]


@needs_in_memory
async def test_an_enqueue_cancelled_while_its_execution_is_written_leaves_it_marked(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the creation's write waits until the test lets it go on
    queue = await broker.new_queue()
    task_id = f"{queue}:cancelled"
    written, go_on = asyncio.Event(), asyncio.Event()
    bulk_write = AsyncMongoMockCollection.bulk_write

    async def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        written.set()
        await go_on.wait()
        return await bulk_write(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMongoMockCollection, "bulk_write", held)
    async with tracker.Publisher(broker.url) as pub:
        enqueue = asyncio.ensure_future(pub.enqueue(queue, {"n": 1}, task_id=task_id))
        await written.wait()
        # When: its caller gives up while the write is on its way, and the write lands
        enqueue.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await enqueue
        go_on.set()
        stored = await _marked(task_id)
        again = await pub.enqueue(queue, {"n": 1}, task_id=task_id)

    # Then: the stored execution was marked, and the next enqueue published it
    assert again.execution_id == stored.execution_id
    await broker.wait_depth(queue, 1)


async def _marked(task_id: str) -> TaskTracker:
    """The task's execution once it is marked ``publishUnconfirmedAt`` (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            found = await TaskTracker.find({"taskId": task_id}).to_list()
            if found and found[0].publish_unconfirmed_at is not None:
                return found[0]
            await asyncio.sleep(0.02)


HOSTILE_IDS: list[Any] = [{"$ne": None}, ["a"], 42, "", "x" * 600, "a\x00b", "\ud800"]


@pytest.mark.parametrize("task_id", HOSTILE_IDS, ids=repr)
async def test_a_task_id_that_is_not_an_id_is_refused_before_anything_is_written(
    broker: Broker, task_id: Any
) -> None:
    # Given: another task's completed execution a {"$ne": None} filter would match
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id=f"{queue}:victim")
        # When / Then
        with pytest.raises((TypeError, ValueError)):
            await pub.enqueue(queue, {}, task_id=task_id, dedupe_window=3600)
    assert len(await TaskTracker.find({"queueName": queue}).to_list()) == 1


@pytest.mark.parametrize(
    "metadata",
    [{"$where": "1"}, {"a.b": 1}, {"nested": {"$gt": 1}}, {1: "x"}, "not a mapping"],
    ids=repr,
)
async def test_metadata_that_could_read_as_operators_is_refused(
    broker: Broker, metadata: Any
) -> None:
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        with pytest.raises((TypeError, ValueError)):
            await pub.enqueue(queue, {}, task_id=f"{queue}:m", metadata=metadata)
    assert await TaskTracker.find({"queueName": queue}).to_list() == []


async def test_a_retry_publish_that_fails_is_not_lost(broker: Broker) -> None:
    """The worker keeps the delivery when a follow-up cannot be published: the redelivery
    publishes the recorded retry (one retry, whatever the number of attempts)."""
    queue = await broker.new_queue()
    attempts: list[int] = []

    @tracker.tracked(queue, retry_policy=FAST, max_retries=1)
    async def flaky(task: TaskContext) -> None:
        attempts.append(task.retry_count)
        if task.retry_count == 0:
            raise tracker.TransientError("once")

    worker = tracker.Worker([flaky], broker.url, requeue_delay=0.1)
    real = worker.transport.publish
    failures = {"left": 1}

    async def publish(message: OutgoingMessage, *, confirm: bool = True) -> None:
        if confirm and ".retry." in message.routing_key and failures["left"]:
            failures["left"] -= 1
            raise PublishError("the broker went away")
        await real(message, confirm=confirm)

    worker.transport.publish = publish  # type: ignore[method-assign]
    async with worker, tracker.Publisher(broker.url) as pub:
        await pub.enqueue(queue, {}, task_id=f"{queue}:r")
        chain = await wait_status(f"{queue}:r", "completed")
    assert [d.status for d in chain] == [TaskStatus.FAILED, TaskStatus.COMPLETED]
    assert attempts == [0, 1]


async def test_enqueueing_on_a_private_in_memory_store_warns_once(broker: Broker) -> None:
    # Given: the in-memory store, and no service consuming in this process
    if not connection.is_in_memory():
        pytest.skip("the warning is about the in-memory store")
    queue = await broker.new_queue()
    transport = AioPikaTransport(broker.url)
    await transport.open()
    try:
        enqueuer = Enqueuer(transport)
        # When
        with capture_logs() as logs:
            for n in range(3):
                await enqueuer.enqueue(queue, {"n": n})
        # Then: one warning that says what to do instead
        warnings = [e for e in logs if "own in-memory store" in e["event"]]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert "TRACKER_MONGODB_URL" in warnings[0]["event"]
        assert "POST /api/v1/tasks" in warnings[0]["event"]
    finally:
        await transport.close()


async def test_enqueueing_beside_a_consuming_service_does_not_warn(broker: Broker) -> None:
    # Given: a service consuming in this process, on the same in-memory store
    queue = await broker.new_queue()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None: ...

    async with (
        tracker.Worker([handle], amqp_url=broker.url, stats_interval=None),
        tracker.Publisher(broker.url) as publisher,
    ):
        # When
        with capture_logs() as logs:
            await publisher.enqueue(queue, {"n": 1})
    # Then
    assert not [e for e in logs if "own in-memory store" in e["event"]]


@pytest.mark.parametrize("payload", [{1, 2}, {"n": float("nan")}, object(), b"bytes"])
async def test_a_payload_json_cannot_encode_is_a_type_error_and_nothing_is_written(
    broker: Broker, payload: object
) -> None:
    # Given
    queue = await broker.new_queue()
    transport = AioPikaTransport(broker.url)
    await transport.open()
    try:
        # When
        with pytest.raises(TypeError, match="not JSON-serialisable") as raised:
            await Enqueuer(transport).enqueue(queue, payload, task_id=f"{queue}:bad")
        # Then: the caller's value, not the tracker's configuration, and no record
        assert not isinstance(raised.value, tracker.ConfigurationError)
        assert await TaskTracker.find({"queueName": queue}).to_list() == []
    finally:
        await transport.close()
