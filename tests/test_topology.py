"""The broker queues of a tracked queue: quorum everywhere, delay and deadline queues that
dead-letter at least once, and the upgrade from an earlier version's queues
(tracker/rabbit/topology.py, tracker/rabbit/upgrade.py, tracker migrate --topology)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from click.testing import CliRunner

import tracker
from tests.broker_nodes import PrivateNode
from tracker.cli.app import main
from tracker.errors import TopologyError
from tracker.rabbit.topology import (
    GROUP_SIZE,
    QueueSpec,
    retry_specs,
    topology_queue_names,
    topology_specs,
    work_queue_specs,
)
from tracker.rabbit.upgrade import HOLDING_SUFFIX, declare_queues, rebuild
from tracker.retry import RetryPolicy

pytest_plugins = ("tests.conftest_broker_nodes",)
pytestmark = pytest.mark.rabbitmq

# The arguments of a delay queue before this version: classic, dead-lettering at most once.
EARLIER_DELAY_ARGUMENTS = {
    "x-message-ttl": 60_000,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": "unused",
}


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


@pytest.fixture
def names() -> list[str]:
    """Queue names a test creates, deleted afterwards with their holding queues."""
    return []


@pytest.fixture(autouse=True)
async def _cleanup(amqp_url: str, names: list[str]) -> AsyncIterator[None]:
    yield
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            for queue in (name, name + HOLDING_SUFFIX):
                await channel.queue_delete(queue)


def _name(names: list[str], kind: str = "q") -> str:
    name = f"topology-{kind}-{uuid.uuid4().hex[:8]}"
    names.append(name)
    return name


async def _fill(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    for n in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps({"n": n}).encode(),
                message_id=f"m{n}",
                headers={"x-execution-id": f"e{n}"},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )


async def _depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def _accepts(url: str, spec: QueueSpec) -> bool:
    """Whether the queue exists with exactly ``spec``'s arguments."""
    connection = await aio_pika.connect(url)
    async with connection:
        probe = await connection.channel()
        try:
            await probe.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False
    return True


async def _exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        try:
            await (await connection.channel()).declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
    return True


# -- what is declared --------------------------------------------------------------------------


def test_every_queue_is_quorum_and_the_transit_ones_dead_letter_at_least_once() -> None:
    specs = topology_specs("reports", RetryPolicy().tiers_ms, 300_000, group_size=3)
    assert all(spec.arguments["x-queue-type"] == "quorum" for spec in specs)
    assert all(spec.arguments[GROUP_SIZE] == 3 for spec in specs)
    transit = [spec for spec in specs if spec.transit]
    assert [s.name for s in transit] == [
        *(s.name for s in retry_specs("reports", RetryPolicy().tiers_ms)),
        "reports.deadline.300s",
    ]
    for spec in transit:
        assert spec.arguments["x-dead-letter-strategy"] == "at-least-once"
        assert spec.arguments["x-overflow"] == "reject-publish"
    assert GROUP_SIZE not in topology_specs("reports", (1000,))[0].arguments


async def test_a_fresh_broker_gets_every_queue_declared(amqp_url: str, names: list[str]) -> None:
    # Given
    queue = _name(names)
    names.extend(topology_queue_names(queue, (1000,), 5000))
    specs = topology_specs(queue, (1000,), 5000)
    # When
    done = await declare_queues(amqp_url, specs)
    # Then
    assert set(done.values()) == {"declared"}
    assert [await _accepts(amqp_url, spec) for spec in specs] == [True] * len(specs)


# -- an earlier version's queues ---------------------------------------------------------------


async def test_an_earlier_delay_queue_is_rebuilt_with_its_messages(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: a classic delay queue of an earlier version holding 25 retries
    queue = _name(names)
    [spec] = retry_specs(queue, (60_000,))
    names.append(spec.name)
    await channel.declare_queue(spec.name, durable=True, arguments=EARLIER_DELAY_ARGUMENTS)
    await _fill(channel, spec.name, 25)
    # When
    done = await declare_queues(amqp_url, [spec])
    # Then: a quorum queue with this version's arguments, every message still there, in order
    assert done == {spec.name: "rebuilt"}
    assert await _accepts(amqp_url, spec)
    assert await _depth(channel, spec.name) == 25
    rebuilt = await channel.get_queue(spec.name, ensure=False)
    first = await rebuilt.get(no_ack=True)
    assert first.message_id == "m0"
    assert first.headers["x-execution-id"] == "e0"
    assert not await _exists(amqp_url, spec.name + HOLDING_SUFFIX)


async def test_a_rebuild_that_died_half_way_is_finished_by_the_next(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: a rebuild died after moving 10 messages out and before moving them back, and
    # more arrived in the old queue meanwhile
    queue = _name(names)
    [spec] = retry_specs(queue, (60_000,))
    names.append(spec.name)
    await channel.declare_queue(spec.name, durable=True, arguments=EARLIER_DELAY_ARGUMENTS)
    await channel.declare_queue(spec.name + HOLDING_SUFFIX, durable=True)
    await _fill(channel, spec.name + HOLDING_SUFFIX, 10)
    await _fill(channel, spec.name, 5)
    # When
    moved = await rebuild(amqp_url, spec)
    # Then: nothing lost
    assert moved == 5
    assert await _depth(channel, spec.name) == 15
    assert await _accepts(amqp_url, spec)
    assert not await _exists(amqp_url, spec.name + HOLDING_SUFFIX)


async def test_two_workers_rebuilding_at_once_lose_nothing(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given
    queue = _name(names)
    [spec] = retry_specs(queue, (60_000,))
    names.append(spec.name)
    await channel.declare_queue(spec.name, durable=True, arguments=EARLIER_DELAY_ARGUMENTS)
    await _fill(channel, spec.name, 40)
    # When: two processes start at the same moment
    results = await asyncio.gather(
        declare_queues(amqp_url, [spec]), declare_queues(amqp_url, [spec])
    )
    # Then: at least every message (a copy may be made twice: a duplicate, skipped later)
    assert {result[spec.name] for result in results} <= {"rebuilt", "declared"}
    assert await _accepts(amqp_url, spec)
    depth = await _depth(channel, spec.name)
    assert 40 <= depth <= 80
    rebuilt = await channel.get_queue(spec.name, ensure=False)
    seen = set()
    while (message := await rebuilt.get(no_ack=True, fail=False)) is not None:
        seen.add(message.message_id)
    assert seen == {f"m{n}" for n in range(40)}


async def test_a_work_queue_with_other_arguments_is_refused_not_rebuilt(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: a work queue that is classic (made by hand, or by another tool)
    queue = _name(names)
    names.append(queue + ".dlq")
    await channel.declare_queue(queue, durable=True)
    await _fill(channel, queue, 3)
    # When / Then
    with pytest.raises(TopologyError, match=f"queue '{queue}' exists with other arguments"):
        await declare_queues(amqp_url, work_queue_specs(queue))
    assert await _depth(channel, queue) == 3


async def test_a_queue_with_another_replica_count_is_kept(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: queues made with one replica; the setting now says three
    queue = _name(names)
    names.append(queue + ".dlq")
    names.extend(topology_queue_names(queue, (1000,)))
    await declare_queues(amqp_url, topology_specs(queue, (1000,), group_size=1))
    wanted = topology_specs(queue, (1000,), group_size=3)
    # When
    done = await declare_queues(amqp_url, wanted)
    # Then: kept as they are, to be declared passively, and a worker starts on them
    assert set(done.values()) == {"kept"}


async def test_a_worker_rebuilds_an_earlier_delay_queue_and_its_retries_still_run(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: an earlier version's classic 1 s delay queue
    queue = _name(names)
    policy = RetryPolicy(initial_delay=1, jitter=0, tiers=(1,))
    names.extend(topology_queue_names(queue, policy.tiers_ms, 300_000))
    [delay] = retry_specs(queue, policy.tiers_ms)
    await channel.declare_queue(
        delay.name,
        durable=True,
        arguments={
            **EARLIER_DELAY_ARGUMENTS,
            "x-message-ttl": 1000,
            "x-dead-letter-routing-key": queue,
        },
    )
    runs: list[int] = []

    @tracker.tracked(queue, retry_policy=policy, max_retries=2)
    async def handle(task: tracker.TaskContext) -> None:
        runs.append(task.retry_count)
        if task.retry_count == 0:
            raise tracker.TransientError("first attempt fails")

    # When: this version's worker starts, and a task fails once
    await tracker.connect()
    try:
        async with tracker.Worker([handle], amqp_url), tracker.Publisher(amqp_url) as pub:
            await pub.enqueue(queue, {}, task_id=f"{queue}:once")
            async with asyncio.timeout(20):
                while runs != [0, 1]:
                    await asyncio.sleep(0.05)
    finally:
        await tracker.disconnect()
    # Then: its retry went through the rebuilt queue
    assert await _accepts(amqp_url, delay)


# -- the guarantee the rebuild is for ----------------------------------------------------------


@pytest.mark.broker_nodes
@pytest.mark.timeout(180)
async def test_a_node_crash_loses_no_message_waiting_in_a_delay_queue(
    private_node: PrivateNode,
) -> None:
    # Given: 200 retries waiting in a 200 ms delay queue on a node
    url = private_node.url
    target = f"soak-{uuid.uuid4().hex[:6]}"
    specs = work_queue_specs(target) + retry_specs(target, (200,))
    await declare_queues(url, specs)
    # A quorum queue declared a moment before a crash may come back empty: the node records
    # where its data lives every few seconds. Queues in use have long existed.
    await asyncio.sleep(5)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        started = time.monotonic()
        for n in range(200):
            await channel.default_exchange.publish(
                aio_pika.Message(str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=specs[-1].name,
            )
        published_in = time.monotonic() - started
    # When: the node is killed while they expire into the work queue, then started again
    await asyncio.to_thread(private_node.kill)
    await asyncio.to_thread(private_node.start)
    # Then: every one of them arrives (with classic delay queues, which dead-letter at most
    # once, three runs of this lost 82, 200 and 175 of the 200)
    received: set[bytes] = set()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        work = await channel.declare_queue(target, passive=True)
        async with asyncio.timeout(60):
            while len(received) < 200:
                message = await work.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.1)
                    continue
                received.add(message.body)
    assert received == {str(n).encode() for n in range(200)}, f"published in {published_in:.2f}s"


# -- tracker migrate --topology ----------------------------------------------------------------


def _run(*args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"TRACKER_AMQP_URL": "", **env})


async def test_migrate_topology_dry_run_says_what_it_would_do_and_changes_nothing(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel, names: list[str]
) -> None:
    # Given: one earlier delay queue; the rest of the topology missing
    queue = _name(names)
    names.extend(topology_queue_names(queue, (1000,), 300_000))
    [delay] = retry_specs(queue, (1000,))
    await channel.declare_queue(delay.name, durable=True, arguments=EARLIER_DELAY_ARGUMENTS)
    # When
    dry = await asyncio.to_thread(
        _run,
        "migrate",
        "--topology",
        "--queue",
        queue,
        "--tiers",
        "1s",
        "--dry-run",
        "--json",
        TRACKER_AMQP_URL=amqp_url,
    )
    # Then
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)["queues"]
    assert plan[delay.name] == "rebuild"
    assert plan[queue] == "create"
    assert not await _accepts(amqp_url, delay)
    # And the real run does it
    real = await asyncio.to_thread(
        _run, "migrate", "--topology", "--queue", queue, "--tiers", "1s", TRACKER_AMQP_URL=amqp_url
    )
    assert real.exit_code == 0, real.output
    assert f"{delay.name}: rebuilt" in real.output
    assert await _accepts(amqp_url, delay)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue", "reports"], "go with --topology"),
        (["--topology"], "needs at least one --queue"),
        (["--topology", "--queue", "reports.dlq"], "is reserved"),
        (["--topology", "--queue", "reports", "--tiers", "5s,1s"], "strictly increasing"),
        (["--topology", "--queue", "reports", "--tiers", "soon"], "not a duration"),
    ],
)
def test_migrate_topology_refuses_bad_usage_in_one_line(args: list[str], message: str) -> None:
    result = _run("migrate", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_migrate_topology_without_a_broker_fails_in_one_line() -> None:
    result = _run(
        "migrate", "--topology", "--queue", "reports", TRACKER_AMQP_URL="amqp://127.0.0.1:1/"
    )
    assert result.exit_code == 1
    assert "cannot reach RabbitMQ at 127.0.0.1:1" in result.output
    assert len(result.output.strip().splitlines()) == 1
