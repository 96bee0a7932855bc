"""The private-node harness: its own nodes crash and restart, its cluster survives losing a node,
and nothing of it outlives the run (the shared broker is never touched)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.broker_nodes import (
    NAME_PREFIX,
    PrivateCluster,
    PrivateNode,
    cleanup_stale,
    live_private_nodes,
)

pytest_plugins = ("tests.conftest_broker_nodes",)

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


@contextlib.contextmanager
def blocking_channel(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def drain(channel: BlockingChannel, queue: str, count: int, timeout: float = 15.0) -> list[bytes]:
    bodies: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count and time.monotonic() < deadline:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None or body is None:
            time.sleep(0.05)
        else:
            bodies.append(body)
    return bodies


def test_a_private_node_keeps_a_durable_quorum_queue_across_a_crash(
    private_node: PrivateNode,
) -> None:
    # Given: a private node of this run, and a durable quorum queue holding persistent messages
    assert private_node.nodename.startswith(NAME_PREFIX)
    assert private_node.nodename.endswith("@localhost")
    queue = f"survives-{uuid.uuid4().hex[:8]}"
    sent = [f"m{i}".encode() for i in range(10)]
    with blocking_channel(private_node.url) as channel:
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        # RabbitMQ 3.10 (Ra 2.2) writes a new queue's Ra registration to disk every 500 ms: a
        # crash right after the declare loses the queue's log (it stays leaderless after restart).
        time.sleep(1.5)
        for body in sent:
            channel.basic_publish("", queue, body, PERSISTENT)

    # When: the node crashes (SIGKILL of its beam process) and comes back
    pid = private_node.pid
    private_node.kill()
    assert not private_node.is_running()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()
    private_node.restart()

    # Then: the queue and every message are still there, and served again
    assert private_node.queue_info(queue)["type"] == "quorum"
    with blocking_channel(private_node.url) as channel:
        assert drain(channel, queue, len(sent)) == sent


def test_closing_a_private_nodes_connections_reaches_its_clients(
    private_node: PrivateNode,
) -> None:
    # Given: a client connected to the private node
    connection = pika.BlockingConnection(pika.URLParameters(private_node.url))
    try:
        # When: the node closes every connection
        private_node.close_connections("fault test")

        # Then: the client is told why (320 CONNECTION_FORCED)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            connection.sleep(5)
        assert closed.value.reply_code == 320
        assert "fault test" in closed.value.reply_text
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def test_cleanup_stale_kills_the_nodes_of_a_run_that_died(broker_nodes_sbin: Path) -> None:
    # Given: a node started by another Python process, which is then SIGKILLed (no atexit)
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.broker_nodes", "node"],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        assert runner.stderr is not None
        assert runner.stdout.readline().startswith("amqp://")
        nodename, pid, log = runner.stderr.readline().split()
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    workdir = Path(log.removeprefix("log=")).parents[2]
    assert live_private_nodes().get(nodename) == int(pid.removeprefix("pid="))
    assert workdir.exists()

    # When
    killed = cleanup_stale()

    # Then: its beam process and directory are gone; only the harness's own nodes were touched
    assert nodename in killed
    assert all(name.startswith(NAME_PREFIX) for name in killed)
    assert nodename not in live_private_nodes()
    assert not workdir.exists()


async def test_a_quorum_queue_keeps_working_when_its_leaders_node_stops(
    private_cluster: PrivateCluster,
) -> None:
    # Given: a quorum queue declared through node 1, replicated on the three nodes
    cluster = private_cluster
    queue = f"failover-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(cluster.urls[0])
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, arguments=QUORUM)
        for i in range(5):
            await channel.default_exchange.publish(
                aio_pika.Message(f"before-{i}".encode()), routing_key=queue
            )
    info = await asyncio.to_thread(cluster.nodes[0].queue_info, queue)
    assert sorted(info["members"]) == sorted(cluster.nodenames)
    leader = cluster.node_index(info["leader"])
    survivor = cluster.nodes[(leader + 1) % len(cluster.nodes)]

    try:
        # When: the leader's node stops
        await asyncio.to_thread(cluster.stop_node, leader)

        # Then: a surviving node elects a new leader, takes publishes and serves every message
        new_leader = await _wait_new_leader(survivor, queue, info["leader"])
        assert new_leader != info["leader"]
        connection = await aio_pika.connect(survivor.url)
        async with connection:
            channel = await connection.channel()
            for i in range(5):
                await channel.default_exchange.publish(
                    aio_pika.Message(f"after-{i}".encode()), routing_key=queue
                )
            declared = await channel.declare_queue(queue, durable=True, arguments=QUORUM)
            bodies = await _consume(declared, 10)
        assert bodies == [f"before-{i}".encode() for i in range(5)] + [
            f"after-{i}".encode() for i in range(5)
        ]
    finally:
        await asyncio.to_thread(cluster.ensure_all_running)
        await asyncio.to_thread(survivor.rabbitmqctl, "delete_queue", queue)


async def _wait_new_leader(node: PrivateNode, queue: str, old: str, timeout: float = 30.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            info: dict[str, Any] = await asyncio.to_thread(node.queue_info, queue)
            if info["leader"] not in ("", old):
                return str(info["leader"])
            await asyncio.sleep(0.2)


async def _consume(queue: aio_pika.abc.AbstractQueue, count: int) -> list[bytes]:
    bodies: list[bytes] = []
    async with asyncio.timeout(15), queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                bodies.append(message.body)
            if len(bodies) == count:
                break
    return bodies
