"""The store against a real PyMongo client talking to a MongoDB server (the wire-protocol
stand-in, tests/mongo_standin): indexes created by `tracker migrate` and checked at connect,
the two index sets, every operation bounded in time, and the shard key in every write that
addresses one execution."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, monitoring

import tracker
from tests.mongo_standin import StandIn
from tests.rabbit import FAST, Broker
from tracker import TaskContext, TaskStatus
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.delivery.envelope import Envelope, OutgoingMessage
from tracker.delivery.processor import Processor, ProcessorOptions
from tracker.enqueue import Enqueuer
from tracker.errors import ConfigurationError, PublishError
from tracker.observability.collector import QueueStatsCollector
from tracker.observability.metrics import TrackerMetrics
from tracker.service.sweeper import Sweeper
from tracker.settings import Settings
from tracker.store import connection
from tracker.store.executions import archive
from tracker.testing import RecordingMiddleware


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def database() -> str:
    return f"tracker_server_{uuid.uuid4().hex[:10]}"


async def migrate(standin: StandIn, database: str, *args: str) -> dict[str, Any]:
    """`tracker migrate`, as an operator runs it (on a thread: the command has its loop)."""
    settings = Settings(mongodb_url=standin.url, database=database)
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["migrate", *args, "--json"], obj=CliState(settings=settings)
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


async def test_consumers_refuse_to_start_without_the_indexes_until_migrated(
    standin: StandIn, database: str, amqp_url: str
) -> None:
    # Given: a database nobody has migrated
    await tracker.connect(standin.url, database)
    try:

        @tracker.tracked("server-q")
        async def handle(task: TaskContext) -> None: ...

        # When / Then: a worker and a publisher refuse, naming the command that fixes it
        with pytest.raises(ConfigurationError, match="tracker migrate"):
            await tracker.Worker([handle], amqp_url).start()
        async with tracker.Publisher(amqp_url) as pub:
            with pytest.raises(ConfigurationError, match="activeKey_1"):
                await pub.enqueue("server-q", {})
    finally:
        await tracker.disconnect()
    # When: the indexes are made
    first = await migrate(standin, database)
    again = await migrate(standin, database)
    # Then: the second run has nothing to do, and connecting finds them
    assert "activeKey_1" in first["create"]
    assert again == {"dryRun": False, "create": [], "drop": []}
    await tracker.connect(standin.url, database)
    try:
        connection.require_indexes()
    finally:
        await tracker.disconnect()


async def test_migrate_moves_between_the_unsharded_and_the_sharded_index_set(
    standin: StandIn, database: str
) -> None:
    await migrate(standin, database)
    # When
    dry = await migrate(standin, database, "--sharded", "--dry-run")
    to_sharded = await migrate(standin, database, "--sharded")
    # Then
    assert dry["dryRun"]
    assert sorted(to_sharded["drop"]) == ["activeKey_1", "executionId_1"]
    assert sorted(to_sharded["create"]) == ["executionId_1", "taskId_1_activeKey_1"]
    info = await _indexes(standin, database)
    assert "activeKey_1" not in info
    assert info["taskId_1_activeKey_1"]["unique"]
    assert not info["executionId_1"].get("unique")
    for name, spec in info.items():
        if spec.get("unique"):
            assert next(iter(dict(spec["key"]))) == "taskId", name
    # and back
    back = await migrate(standin, database, "--unsharded")
    assert sorted(back["drop"]) == ["executionId_1", "taskId_1_activeKey_1"]
    assert (await _indexes(standin, database))["executionId_1"]["unique"]


async def _indexes(standin: StandIn, database: str) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(standin.url)
    try:
        return dict(await client[database]["task_trackers"].index_information())
    finally:
        await client.close()


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

    def failed(self, event: monitoring.CommandFailedEvent) -> None: ...


def single_execution_filters(command: dict[str, Any]) -> list[dict[str, Any]]:
    """The filters of a write command that name one execution."""
    name = next(iter(command))
    if name == "update":
        filters = [statement["q"] for statement in command.get("updates", [])]
    elif name == "findAndModify":
        filters = [command.get("query", {})]
    elif name == "delete":
        filters = [statement["q"] for statement in command.get("deletes", [])]
    else:
        return []
    return [f for f in filters if "executionId" in f]


class Published:
    """A transport that keeps what is published (the store is what this test is about)."""

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []
        self.is_open = True

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def declare_work_queue(self, queue: str) -> None: ...

    async def declare(self, rules: Any) -> None: ...

    async def consume(self, queue: str, on_delivery: Any) -> Any: ...

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        self.messages.append(message)


def envelope_of(message: OutgoingMessage, queue: str, redelivered: bool = False) -> Envelope:
    return Envelope(
        queue,
        message.body,
        message.headers,
        message.message_id,
        message.correlation_id,
        redelivered,
    )


@pytest.fixture
async def sharded_store(standin: StandIn, database: str) -> AsyncIterator[Recorder]:
    await migrate(standin, database, "--sharded")
    recorder = Recorder()
    monitoring.register(recorder)
    await tracker.connect(standin.url, database, sharded=True)
    try:
        yield recorder
    finally:
        await tracker.disconnect()
        monitoring._LISTENERS.command_listeners.remove(recorder)


async def test_every_write_that_names_an_execution_names_its_task(
    sharded_store: Recorder,
) -> None:
    # Given: a run through the store's writes, without a broker: enqueue, claim, complete,
    # fail with a retry, dead-letter, expire, sweep, archive
    queue = "sharded-q"

    @tracker.tracked(queue, retry_policy=FAST, max_retries=1, timeout=0.05)
    async def handle(task: TaskContext) -> str:
        if task.payload["kind"] == "flaky" and task.retry_count == 0:
            raise tracker.TransientError("once")
        if task.payload["kind"] == "bad":
            raise tracker.ValidationError("never")
        if task.payload["kind"] == "slow":
            await asyncio.sleep(1)
        return "done"

    transport = Published()
    enqueuer = Enqueuer(transport)  # type: ignore[arg-type]
    processor = Processor(handle, ProcessorOptions(worker_id="w", timeout_grace=0.0))
    for kind in ("ok", "flaky", "bad", "slow"):
        await enqueuer.enqueue(queue, {"kind": kind}, task_id=f"t:{kind}")
    # When
    while transport.messages:
        message = transport.messages.pop(0)
        decision = await processor.process(envelope_of(message, queue))
        transport.messages.extend(decision.publish)
    [dead] = await tracker.TaskTracker.find({"taskId": "t:bad"}).to_list()
    await archive(dead.execution_id, reason="seen", archived_by="ops", task_id=dead.task_id)
    await Sweeper({queue: processor.outcomes}, transport.publish).sweep()
    # Then: every write naming an execution also names its task (the shard key)
    writes = [f for command in sharded_store.commands for f in single_execution_filters(command)]
    assert len(writes) >= 8
    assert [f for f in writes if "taskId" not in f] == []
    statuses = {
        doc.task_id: doc.status
        for doc in await tracker.TaskTracker.find({"queueName": queue}).to_list()
        if doc.status is not TaskStatus.FAILED
    }
    assert statuses == {
        "t:ok": TaskStatus.COMPLETED,
        "t:flaky": TaskStatus.COMPLETED,
        "t:bad": TaskStatus.ARCHIVED,
        "t:slow": TaskStatus.DLQ,
    }


class Refusing(Published):
    """A transport whose publishes fail while ``failing``: the confirm lost
    (``maybe_published``), or the message certainly not taken."""

    def __init__(self, maybe_published: bool) -> None:
        super().__init__()
        self.maybe_published = maybe_published
        self.failing = True

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        if self.failing:
            raise PublishError("refused", maybe_published=self.maybe_published)
        await super().publish(message, confirm=confirm)


async def test_the_writes_after_a_failed_publish_name_the_task(sharded_store: Recorder) -> None:
    # Given: one enqueue whose confirm is lost, one whose message is refused
    queue = "sharded-publish"

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None: ...

    processor = Processor(handle, ProcessorOptions(worker_id="w"))
    lost, refused = Refusing(maybe_published=True), Refusing(maybe_published=False)
    # When: both fail, then the sweeper publishes the unconfirmed one again
    for transport, task_id in ((lost, "t:lost"), (refused, "t:refused")):
        with pytest.raises(PublishError):
            await Enqueuer(transport).enqueue(queue, {"n": 1}, task_id=task_id)  # type: ignore[arg-type]
    lost.failing = False
    await Sweeper({queue: processor.outcomes}, lost.publish, republish_after=0.0).sweep()
    # Then: the execution kept is published again, the refused one rolled back, and every
    # write naming an execution named its task
    assert [m.correlation_id for m in lost.messages] == ["t:lost"]
    assert await tracker.TaskTracker.find({"taskId": "t:refused"}).to_list() == []
    writes = [f for command in sharded_store.commands for f in single_execution_filters(command)]
    assert len(writes) >= 3
    assert [f for f in writes if "taskId" not in f] == []


@pytest.mark.rabbitmq
async def test_a_silent_server_frees_the_slot_and_requeues_within_the_bound(
    standin: StandIn, database: str, broker: Broker
) -> None:
    # Given: a worker whose store answers within 1 s or not at all
    await migrate(standin, database)
    await tracker.connect(standin.url, database, timeout=1.0)
    control: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(standin.url)
    queue = await broker.new_queue()
    runs: list[str] = []

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        runs.append(task.execution_id)

    recorder = RecordingMiddleware()
    try:
        async with tracker.Worker([handle], broker.url, middleware=[recorder], requeue_delay=0.1):
            await control.admin.command({"standinSilence": 1, "on": True})
            loop = asyncio.get_running_loop()
            started = loop.time()
            # When: a delivery arrives while the server is silent
            await broker.publish_raw(queue, {}, message_id="s-1", correlation_id=f"{queue}:s")
            await recorder.wait_for(store_unavailable=1, timeout=15)
            waited = loop.time() - started
            await control.admin.command({"standinSilence": 1, "on": False})
            # Then: requeued within the bound (five times over), and run once it answers
            await recorder.wait_for(completed=1, timeout=30)
        assert waited < 5 * (1.0 + 1.0)
        assert runs == ["s-1"]
    finally:
        await control.admin.command({"standinSilence": 1, "on": False})
        await control.close()
        await tracker.disconnect()


# PyMongo drops the connection of an operation cancelled midway without closing its socket.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_statistics_job_stops_whenever_it_is_stopped(
    standin: StandIn, database: str
) -> None:
    # Given: the statistics job reading through the real PyMongo client, which now and then
    # swallows a cancellation that lands inside an operation (about 2 in 100 here)
    await tracker.connect(standin.url, database)
    try:
        collector = QueueStatsCollector(TrackerMetrics(CollectorRegistry()), {"reports": 60})
        rounds = random.Random(7)
        for _ in range(150):
            # When: stopped at any point of a refresh
            collector.start()
            await asyncio.sleep(rounds.random() * 0.004)
            stopping = asyncio.ensure_future(collector.stop())
            # Then: it stops (before, a swallowed cancellation left stop() waiting for ever)
            await asyncio.wait([stopping], timeout=20)
            assert stopping.done()
            stopping.result()
    finally:
        await tracker.disconnect()
        # The dropped sockets are collected here, under this test's filters, not in the next.
        gc.collect()
