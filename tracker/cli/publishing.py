"""Publishing from the command line: a confirmed aio-pika channel on the first node of
TRACKER_AMQP_URL that answers, and a publisher on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import click
from aio_pika.abc import AbstractChannel

from tracker.delivery.envelope import OutgoingMessage
from tracker.errors import ConfigurationError
from tracker.rabbit.aio_transport import confirming_channel, publish
from tracker.rabbit.failover import connect_failover
from tracker.rabbit.nodes import NoBrokerNodeError
from tracker.settings import Settings


@contextlib.asynccontextmanager
async def cli_channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms on the first node of TRACKER_AMQP_URL that answers
    (one URL, or several comma-separated), or one line naming the nodes tried and what to
    do."""
    try:
        connection = await connect_failover(settings.amqp_url, timeout=10, shuffle=False)
    except (NoBrokerNodeError, ConfigurationError) as error:
        raise click.ClickException(str(error)) from error
    try:
        yield await confirming_channel(connection)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def cli_publisher(
    settings: Settings,
) -> AsyncIterator[Callable[[OutgoingMessage], Awaitable[None]]]:
    """A function publishing each message, confirmed."""
    async with cli_channel(settings) as channel:
        yield lambda message: publish(channel, message)
