"""Several broker nodes behind one setting: the node list, its order and its redaction (pure),
and the clients moving to another node of a private 3-node cluster when theirs goes away.

The failover time measurement runs only with ``TRACKER_FAILOVER_RUNS=<n>`` (each run stops a
node and starts it again, ~10 s): ``TRACKER_FAILOVER_RUNS=5 .venv/bin/pytest -s -k measure``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pika
import pika.exceptions
import pytest
from aio_pika.abc import AbstractIncomingMessage
from hypothesis import example, given
from hypothesis import strategies as st

from tests.broker_nodes import PrivateCluster
from tracker.errors import ConfigurationError, TrackerError
from tracker.rabbit.failover import FailoverConnection, connect_failover
from tracker.rabbit.nodes import NoBrokerNodeError, parse_urls, redact, redact_all, shuffled
from tracker.rabbit.pika import StoreThread, SyncPublisher
from tracker.rabbit.pika.nodes import PikaNodes, blocking_connection

pytest_plugins = ("tests.conftest_broker_nodes",)

SECRET = "Zq9xSECRETx7Wp"
QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


# --------------------------------------------------------------------------- parse_urls


def test_parse_keeps_each_url_as_written_in_order() -> None:
    value = (
        " amqp://u:p@rabbit-1:5672/ ,amqps://rabbit-2.example.com/prod?heartbeat=5,"
        "AMQP://127.0.0.1 , amqp://[::1]:5673/"
    )

    assert parse_urls(value) == [
        "amqp://u:p@rabbit-1:5672/",
        "amqps://rabbit-2.example.com/prod?heartbeat=5",
        "AMQP://127.0.0.1",
        "amqp://[::1]:5673/",
    ]
    assert parse_urls("amqp://guest:guest@127.0.0.1:5672/") == [
        "amqp://guest:guest@127.0.0.1:5672/"
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "broker URL 1: empty"),
        (f"amqp://u:{SECRET}@h1,", "broker URL 2: empty"),
        (f"amqp://u:{SECRET}@h1,,amqp://h2", "broker URL 2: empty"),
        (f"http://u:{SECRET}@h1:5672/", "must start with amqp:// or amqps://"),
        (f"u:{SECRET}@h1:5672", "must start with amqp:// or amqps://"),
        (f"amqp://u:{SECRET}@/vhost", "has no host"),
        (f"amqp://u:{SECRET}@:5672/", "has no host"),
        (f"amqp://u:{SECRET}@h1:99999/", "has an invalid port"),
        (f"amqp://u:{SECRET}@h1:0/", "has an invalid port"),
        (f"amqp://u:{SECRET}@h 1/", "whitespace"),
        (f"amqp://u:{SECRET}@h1/,amqp://v:{SECRET}@h1:5672/x", "listed twice"),
        # A comma in a password splits the item: the fragments are refused, never shown.
        (f"amqp://u:{SECRET},{SECRET}@h1/", "percent-encode"),
    ],
)
def test_parse_refuses_a_bad_item_without_showing_its_password(value: str, why: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_urls(value)

    assert why in str(refused.value)
    assert SECRET not in str(refused.value)


_no_authority_end = st.characters(blacklist_characters="/?#")
_password = st.builds(
    lambda before, after: before + SECRET + after,
    st.text(_no_authority_end, max_size=6),
    st.text(_no_authority_end, max_size=6),
)
_url = st.builds(
    "{}{}:{}@{}{}{}".format,
    st.sampled_from(["amqp://", "amqps://", "AMQP://", "http://", "amqp:/", ""]),
    st.text(max_size=4),
    _password,
    st.sampled_from(["h", "127.0.0.1", "rabbit-1.example.com", "[::1]", "", "a b"])
    | st.text(max_size=6),
    st.sampled_from(["", ":5672", ":0", ":65536", ":x"]) | st.integers(0, 70000).map(":{}".format),
    st.sampled_from(["", "/", "/vh", "/?heartbeat=5", "#x"]) | st.text(max_size=4),
)
_item = _url | st.text(max_size=12)
_value = st.lists(st.tuples(st.sampled_from(["", " ", "\t"]), _item), min_size=1, max_size=4).map(
    lambda items: ",".join(pad + item + pad for pad, item in items)
)


@given(_value)
@example(f"amqp://u:x@{SECRET}@h:5672/")
@example(f"amqp://u:{SECRET},tail@h/")
@example(f"amqp://u:[{SECRET}@h/")
def test_parse_returns_valid_urls_or_refuses_and_never_shows_a_password(value: str) -> None:
    try:
        urls = parse_urls(value)
    except ConfigurationError as refused:
        message, urls = str(refused), []
    else:
        message = ""
        assert urls
    assert SECRET not in message
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in ("amqp", "amqps")
        assert parts.hostname
        assert parts.port is None or 0 < parts.port < 65536
        assert SECRET not in redact(url)
    assert SECRET not in " ".join(redact_all(urls))


@given(st.text())
def test_parse_of_any_text_returns_urls_or_raises_configuration_error(value: str) -> None:
    try:
        urls = parse_urls(value)
    except ConfigurationError:
        return
    for url in urls:
        assert urlsplit(url).scheme in ("amqp", "amqps")
        host, _, port = redact(url).rpartition(":")
        assert host
        assert "@" not in redact(url)
        assert port.isdigit()


# --------------------------------------------------------------------------- redact, shuffled


@pytest.mark.parametrize(
    ("url", "node"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "127.0.0.1:5672"),
        ("amqp://u:p@rabbit-1/vhost?heartbeat=5", "rabbit-1:5672"),
        ("amqps://u:p@rabbit-1/", "rabbit-1:5671"),
        ("amqp://u:p@[::1]:5673/", "[::1]:5673"),
        ("amqp://u:p@w@rd@h:1/", "h:1"),
    ],
)
def test_redact_keeps_only_host_and_port(url: str, node: str) -> None:
    assert redact(url) == node
    assert redact_all([url, url]) == [node, node]


def test_shuffled_is_a_permutation_stable_for_the_process() -> None:
    urls = [f"amqp://u:p@rabbit-{i}:5672/" for i in range(8)]

    order = shuffled(urls)

    assert sorted(order) == sorted(urls)
    assert shuffled(urls) == order
    assert shuffled(list(reversed(urls))) == order
    # Two lists order their common nodes alike.
    assert shuffled(urls[:5]) == [url for url in order if url in urls[:5]]


def test_shuffled_differs_between_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = [f"amqp://u:p@rabbit-{i}:5672/" for i in range(8)]
    here = shuffled(urls)

    pid = os.getpid()
    monkeypatch.setattr("tracker.rabbit.nodes.os.getpid", lambda: pid + 1)

    assert shuffled(urls) != here  # 1 chance in 40320 of a false failure


def test_shuffled_draws_from_a_given_rng() -> None:
    urls = [f"amqp://rabbit-{i}/" for i in range(5)]

    assert shuffled(urls, random.Random(7)) == shuffled(urls, random.Random(7))
    assert sorted(shuffled(urls, random.Random(7))) == sorted(urls)


# --------------------------------------------------------------------------- no node answers


@pytest.fixture
def closed_ports() -> Iterator[list[int]]:
    """Two local ports nothing listens on (bound without listening: refused at once)."""
    sockets = [socket.socket() for _ in range(2)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        yield [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A local port that accepts TCP connections and never says a word (a hung node)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_connect_failover_names_every_node_when_none_answers(
    closed_ports: list[int], silent_port: int
) -> None:
    urls = [f"amqp://u:{SECRET}@127.0.0.1:{port}/" for port in [*closed_ports, silent_port]]
    started = time.monotonic()

    with pytest.raises(NoBrokerNodeError) as refused:
        await connect_failover(urls, timeout=1.0, reconnect_interval=5.0)

    # One attempt per node, each at most `timeout`: the silent node's 1 s, not a retry loop.
    assert time.monotonic() - started < 4.0
    error = refused.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, TrackerError)
    assert set(error.nodes) == {f"127.0.0.1:{port}" for port in [*closed_ports, silent_port]}
    assert all(node in str(error) for node in error.nodes)
    assert set(error.errors) == set(error.nodes)
    assert SECRET not in str(error)


async def test_a_failover_connection_refuses_bad_urls_before_dialling() -> None:
    with pytest.raises(ConfigurationError, match="has no host"):
        FailoverConnection([f"amqp://u:{SECRET}@/"])


async def test_a_failover_connection_names_its_node_without_the_password() -> None:
    connection = FailoverConnection(f"amqp://u:{SECRET}@127.0.0.1:1/,amqp://127.0.0.1:2/")

    assert connection.current_node == "127.0.0.1:1"
    assert connection.nodes == ["127.0.0.1:1", "127.0.0.1:2"]
    assert "127.0.0.1:1" in str(connection)
    assert SECRET not in str(connection)
    assert SECRET not in repr(connection)


async def test_a_cancelled_first_connect_closes_the_connection(silent_port: int) -> None:
    connection = FailoverConnection([f"amqp://127.0.0.1:{silent_port}/"])

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connection.connect(timeout=None), 0.3)

    assert connection.is_closed


def test_pika_nodes_name_every_node_when_none_answers(closed_ports: list[int]) -> None:
    urls = [f"amqp://u:{SECRET}@127.0.0.1:{port}/" for port in closed_ports]

    with pytest.raises(NoBrokerNodeError) as refused:
        blocking_connection(urls, retry_delay=0.1)

    assert sorted(refused.value.nodes) == sorted(f"127.0.0.1:{p}" for p in closed_ports)
    assert SECRET not in str(refused.value)


async def test_pika_nodes_bound_each_attempt(silent_port: int) -> None:
    pika_nodes = PikaNodes([f"amqp://127.0.0.1:{silent_port}/"], timeout=0.5)
    started = time.monotonic()

    with pytest.raises(NoBrokerNodeError, match=f"127.0.0.1:{silent_port}"):
        await asyncio.to_thread(pika_nodes.connect)

    assert time.monotonic() - started < 3.0


# --------------------------------------------------------------------------- private cluster


def _node_of(cluster: PrivateCluster, url: str) -> int:
    port = urlsplit(url).port
    return next(i for i, node in enumerate(cluster.nodes) if node.amqp_port == port)


async def _eventually(condition: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
async def test_connect_failover_starts_on_the_first_node_that_answers(
    private_cluster: PrivateCluster, closed_ports: list[int]
) -> None:
    down = f"amqp://guest:guest@127.0.0.1:{closed_ports[0]}/"

    connection = await connect_failover([down, *private_cluster.urls[1:]], shuffle=False)

    try:
        assert connection.current_url == private_cluster.urls[1]
        assert connection.failovers == 0  # not connected before: not a failover
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name
    finally:
        await connection.close()


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
async def test_aio_pika_consumer_moves_to_another_node_when_its_node_stops(
    private_cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: a failover connection over the three nodes, consuming a quorum queue
    cluster = private_cluster
    moves: list[tuple[str, str]] = []
    connection = await connect_failover(
        cluster.urls, reconnect_interval=0.5, on_failover=lambda a, b: moves.append((a, b))
    )
    queue_name = f"nodes-{uuid.uuid4().hex[:8]}"
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        received.put_nowait(message.body)

    stopped = _node_of(cluster, connection.current_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        await queue.consume(on_message)
        assert connection.current_node == redact(cluster.urls[stopped])

        # When: the connection's node stops, and a message is published through another node
        await asyncio.to_thread(cluster.stop_node, stopped)
        other = cluster.urls[(stopped + 1) % len(cluster.urls)]
        async with await aio_pika.connect(other) as publisher:
            publishing = await publisher.channel()
            await publishing.default_exchange.publish(
                aio_pika.Message(b"after the stop", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue_name,
            )

        # Then: the consumer gets it, on another node, after exactly one failover
        async with asyncio.timeout(30):
            assert await received.get() == b"after the stop"
        await _eventually(lambda: connection.failovers == 1, timeout=5)
        assert _node_of(cluster, connection.current_url) != stopped
        assert connection.connected.is_set()
        assert moves == [(redact(cluster.urls[stopped]), connection.current_node)]
        # aio-pika's "RobustChannel._on_close ... RuntimeError" ERROR is not written.
        assert not [r for r in caplog.records if "RobustChannel._on_close" in r.getMessage()]
    finally:
        await connection.close()
        await asyncio.to_thread(cluster.ensure_all_running)
        # After the restart: deleting a quorum queue with a member down waits ~5 s for it.
        await asyncio.to_thread(cluster.nodes[stopped].rabbitmqctl, "delete_queue", queue_name)


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
def test_pika_skips_a_stopped_node(private_cluster: PrivateCluster) -> None:
    # Given: three nodes, the first of them (in the order tried) stopped
    cluster = private_cluster
    cluster.stop_node(0)
    try:
        # When
        pika_nodes = PikaNodes(cluster.urls, shuffle=False, retry_delay=0.1)
        connection = pika_nodes.connect()

        # Then: connected to the next node, which serves
        try:
            assert pika_nodes.current_node == redact(cluster.urls[1])
            assert pika_nodes.current_url == cluster.urls[1]
            channel = connection.channel()
            declared = channel.queue_declare("", exclusive=True)
            assert declared.method.queue
        finally:
            connection.close()
    finally:
        cluster.ensure_all_running()


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
def test_pika_run_reconnects_to_the_next_node_after_a_lost_connection(
    private_cluster: PrivateCluster,
) -> None:
    # Given: a consume loop over the three nodes in a known order
    cluster = private_cluster
    moves: list[tuple[str, str]] = []
    pika_nodes = PikaNodes(
        cluster.urls, shuffle=False, retry_delay=0.1, on_failover=lambda a, b: moves.append((a, b))
    )
    seen: list[str | None] = []

    def consume(connection: pika.BlockingConnection) -> str:
        seen.append(pika_nodes.current_node)
        if len(seen) == 1:
            # When: the broker closes the connection (as a node stopping does: 320)
            cluster.nodes[0].close_connections("failover test")
            connection.sleep(10)
            raise AssertionError("the connection was not closed")
        return "done"

    # Then: the loop goes on on the next node
    assert pika_nodes.run(consume) == "done"
    assert seen == [redact(cluster.urls[0]), redact(cluster.urls[1])]
    assert pika_nodes.failovers == 1
    assert moves == [(redact(cluster.urls[0]), redact(cluster.urls[1]))]


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
def test_a_sync_publisher_moves_to_the_next_node_when_its_node_stops(
    private_cluster: PrivateCluster,
) -> None:
    # Given: a SyncPublisher over the three nodes, connected to one of them
    cluster = private_cluster
    store = StoreThread.connect(None, f"tracker_nodes_{uuid.uuid4().hex[:8]}")
    queue = f"nodes-{uuid.uuid4().hex[:8]}"
    try:
        with SyncPublisher(cluster.url_list, store=store) as pub:
            first = pub.enqueue(queue, {"n": 1})
            stopped = _node_of(cluster, pub.nodes.current_url or "")
            # When: its node stops
            cluster.stop_node(stopped)
            second = pub.enqueue(queue, {"n": 2})
            # Then: the next enqueue went through another node
            assert _node_of(cluster, pub.nodes.current_url or "") != stopped
        assert not first.deduplicated
        assert not second.deduplicated
        running = (stopped + 1) % len(cluster.nodes)
        info = cluster.nodes[running].rabbitmqctl("list_queues", "name", "--quiet")
        assert queue in info
    finally:
        store.close()
        cluster.ensure_all_running()


# --------------------------------------------------------------------------- measurement


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
@pytest.mark.skipif(
    not os.environ.get("TRACKER_FAILOVER_RUNS"), reason="set TRACKER_FAILOVER_RUNS=<n> to measure"
)
@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.timeout(900)
async def test_measure_failover_time(private_cluster: PrivateCluster, how: str) -> None:
    """Node stopped (or killed) -> the consumer receives again, over n runs; printed (-s)."""
    runs = [
        await _one_failover(private_cluster, how)
        for _ in range(int(os.environ["TRACKER_FAILOVER_RUNS"]))
    ]
    for name in ("from_stop", "from_loss", "reconnect"):
        values = [run[name] for run in runs]
        print(
            f"\nfailover ({how}) {name}: median {statistics.median(values):.3f} s, "
            f"worst {max(values):.3f} s, runs {[round(v, 3) for v in values]}"
        )
    assert all(run["failovers"] == 1 for run in runs)


async def _one_failover(cluster: PrivateCluster, how: str) -> dict[str, float]:
    """One run: consume on the connection's node, publish every 20 ms through another, stop or
    kill the consumer's node; times from the stop command / from the connection's loss to the
    first delivery afterwards, and from the loss to the connection being restored."""
    await asyncio.to_thread(cluster.ensure_all_running)
    connection = await connect_failover(cluster.urls, reconnect_interval=0.5)
    marks: dict[str, float] = {}
    connection.close_callbacks.add(lambda *_: marks.setdefault("lost", time.monotonic()))
    connection.reconnect_callbacks.add(lambda *_: marks.setdefault("back", time.monotonic()))
    queue_name = f"measure-{uuid.uuid4().hex[:8]}"
    deliveries: list[float] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        deliveries.append(time.monotonic())
        await message.ack()

    victim = _node_of(cluster, connection.current_url)
    other = cluster.urls[(victim + 1) % len(cluster.urls)]
    publisher = await aio_pika.connect(other)
    done = asyncio.Event()

    async def publish() -> None:
        channel = await publisher.channel()
        while not done.is_set():
            await channel.default_exchange.publish(
                aio_pika.Message(b"tick"), routing_key=queue_name
            )
            await asyncio.sleep(0.02)

    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        await queue.consume(on_message)
        await asyncio.sleep(1.5)  # Ra registers a new queue on disk every 500 ms (a kill)
        ticking = asyncio.create_task(publish())
        await asyncio.sleep(0.5)
        started = time.monotonic()
        stop = cluster.stop_node if how == "stop" else cluster.kill_node
        await asyncio.to_thread(stop, victim)
        await _eventually(
            lambda: "lost" in marks and any(t > marks["lost"] for t in deliveries), timeout=60
        )
        first = next(t for t in deliveries if t > marks["lost"])
        done.set()
        await ticking
        await _eventually(lambda: connection.failovers == 1, timeout=5)
        return {
            "from_stop": first - started,
            "from_loss": first - marks["lost"],
            "reconnect": marks["back"] - marks["lost"],
            "failovers": connection.failovers,
        }
    finally:
        done.set()
        await publisher.close()
        await connection.close()
        await asyncio.to_thread(cluster.ensure_all_running)
        await asyncio.to_thread(cluster.nodes[victim].rabbitmqctl, "delete_queue", queue_name)
