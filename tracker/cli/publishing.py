"""Publishing from the command line: a confirmed aio-pika channel, and the outcome service
of a queue whose consumer's own settings are not at hand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import click
from aio_pika.abc import AbstractChannel

from tracker.consumer import QueueRules
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.rabbit.aio_transport import confirming_channel, publish
from tracker.settings import Settings

CLI_WORKER = "tracker-cli"


@contextlib.asynccontextmanager
async def cli_channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms on TRACKER_AMQP_URL, or a clear error."""
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    except Exception as error:
        raise click.ClickException(
            f"cannot reach RabbitMQ at {settings.amqp_url.split('@')[-1]}: {error} "
            "(set TRACKER_AMQP_URL)"
        ) from error
    async with connection:
        yield await confirming_channel(connection)


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
