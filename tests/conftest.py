from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

import tracker
from tracker.store import connection


@pytest.fixture
async def store() -> AsyncIterator[str]:
    """A connected, empty store: the in-memory MongoDB, or the real server named by
    TRACKER_MONGODB_URL (each test gets its own database, dropped afterwards)."""
    url = os.environ.get("TRACKER_MONGODB_URL") or None
    database = f"tracker_test_{uuid.uuid4().hex[:12]}"
    await tracker.connect(url, database)
    if url is not None:
        # A real server's database starts without indexes (`tracker migrate` creates them);
        # the unique ones are part of what the tests check.
        await connection.ensure_indexes()
    try:
        yield database
    finally:
        if connection.is_connected():
            await connection.collection().database.client.drop_database(database)
        await tracker.disconnect()


def in_memory() -> bool:
    return not os.environ.get("TRACKER_MONGODB_URL")


# For tests that inject failures through the in-memory MongoDB (tracker.testing): skipped
# with that reason when the tests run against a server.
needs_in_memory = pytest.mark.skipif(
    not in_memory(), reason="injects failures into the in-memory MongoDB"
)


AMQP_URL = os.environ.get("TRACKER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test broker: skipped when unreachable on a developer machine, a failure in CI."""
    import asyncio

    import aio_pika

    async def reachable() -> str | None:
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
        except Exception as exc:
            return str(exc) or type(exc).__name__
        await connection.close()
        return None

    problem = asyncio.run(reachable())
    if problem is not None:
        message = f"RabbitMQ is not reachable at {AMQP_URL}: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


@pytest.fixture(scope="module", params=["direct", "service"])
def cli_backend(request: pytest.FixtureRequest) -> str:
    """Each backend of the command line in turn: MongoDB itself, or a running service's
    HTTP API (tests/service_harness.py); one suite of command tests runs against both."""
    return str(request.param)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    from tests.rabbit import Broker

    async with Broker(amqp_url) as helper:
        yield helper


@pytest.fixture(params=["aio-pika", "pika"])
async def driver(request: pytest.FixtureRequest, broker: Broker) -> AsyncIterator[Driver]:
    """Each RabbitMQ adapter in turn, behind one interface (tests/adapters.py)."""
    from tests.adapters import AioDriver, PikaDriver

    if request.param == "pika" and not in_memory():
        pytest.skip("the pika driver shares the test's in-memory store across threads")
    url = broker.url
    if "heartbeat" in request.node.name:
        url += "?heartbeat=1"
    chosen: Driver = AioDriver(url) if request.param == "aio-pika" else PikaDriver(url)
    try:
        yield chosen
    finally:
        await chosen.close()


if TYPE_CHECKING:
    from tests.adapters import Driver
    from tests.rabbit import Broker
