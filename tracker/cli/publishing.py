"""Publishing from the command line: a confirmed aio-pika channel, and the outcome service
of a queue whose consumer's own settings are not at hand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import click
from aio_pika.abc import AbstractChannel

from tracker.consumer import QueueRules
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.errors import ConfigurationError
from tracker.rabbit.aio_transport import confirming_channel, publish
from tracker.rabbit.failover import connect_failover
from tracker.rabbit.nodes import NoBrokerNodeError
from tracker.settings import Settings

CLI_WORKER = "tracker-cli"


@contextlib.asynccontextmanager
async def cli_channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms on the first node of TRACKER_AMQP_URL that answers
    (one URL, or several comma-separated), or a clear error naming the nodes tried."""
    try:
        connection = await connect_failover(settings.amqp_url, timeout=10, shuffle=False)
    except (NoBrokerNodeError, ConfigurationError) as error:
        raise click.ClickException(f"{error} (set TRACKER_AMQP_URL)") from error
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


def operator_outcomes(queue: str, timeout: float) -> Outcomes:
    """Outcomes of ``queue`` under the default retry policy, as an operator records them: the
    stored maxRetries of each execution still decides how many retries it gets."""
    return Outcomes(QueueRules(queue=queue, timeout=max(timeout, 0.001)), CLI_WORKER)
