"""``tracker console``: the API and the console alone, against the MongoDB the services write
to, without running any consumer."""

from __future__ import annotations

import asyncio
import signal

import click
import structlog

from tracker.cli.app import state
from tracker.errors import ConfigurationError, StoreUnavailableError
from tracker.service import event_loop
from tracker.settings import Settings
from tracker.transport import Transport

log = structlog.get_logger("tracker.console")
DEFAULT_CONSOLE_PORT = 9465
IN_MEMORY_NOTE = (
    "TRACKER_MONGODB_URL is not set: this console reads an IN-MEMORY MongoDB of its own and "
    "sees nothing that `tracker serve` (or any other process) records. Set "
    "TRACKER_MONGODB_URL, or open the console of the running `tracker serve` instead."
)


def console_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


async def run_console(settings: Settings, host: str, port: int) -> None:
    """Serve the API and the console until SIGTERM/SIGINT."""
    from prometheus_client import CollectorRegistry

    from tracker.rabbit.aio_transport import AioPikaTransport
    from tracker.store import connection
    from tracker.web.access import Access
    from tracker.web.app import create_app
    from tracker.web.context import Operator
    from tracker.web.health import Health
    from tracker.web.server import HttpServer

    async def open_transport() -> Transport:
        # Publishing (enqueue, edit and retry) connects on first use: the console itself
        # needs only MongoDB.
        transport = AioPikaTransport(settings.amqp_url)
        await transport.open()
        return transport

    await connection.connect(settings.mongodb_url, settings.database, sharded=settings.sharded)
    operator = Operator(
        Access(settings.api_tokens, host),
        settings.redact_fields,
        open_transport=open_transport,
        amqp_url=settings.amqp_url,
    )
    try:
        await connection.ensure_indexes(settings.search_keys, settings.audit_retention)
        app = create_app(CollectorRegistry(), Health({"mongodb": connection.ping}), [], operator)
        server = HttpServer(app, host=host, port=port)
        await server.start()
        click.echo(f"console: {console_url(host, server.port)}  (Ctrl-C to stop)")
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        try:
            await stopped.wait()
        finally:
            await server.stop()
    finally:
        await operator.close()
        await connection.disconnect()


@click.command()
@click.option(
    "--host",
    help="Address to listen on (default TRACKER_HTTP_HOST, else 127.0.0.1). Another address "
    "than loopback needs TRACKER_API_TOKENS.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_CONSOLE_PORT,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.pass_context
def console(ctx: click.Context, host: str | None, port: int) -> None:
    """Serve the operator console (/) and the HTTP API (/api/v1) alone, on the MongoDB
    named by TRACKER_MONGODB_URL, without running consumers.

    It shows what the services writing to that MongoDB record; replays it starts are run
    by those services (`tracker serve`). With TRACKER_MONGODB_URL unset it reads an
    in-memory MongoDB of its own and sees NOTHING of another process: open the console of
    the running `tracker serve` (its HTTP port, 9464 by default) instead. Enqueueing and
    edit-and-retry publish on TRACKER_AMQP_URL. Without TRACKER_API_TOKENS it answers on a
    loopback address only.
    """
    settings = state(ctx).settings
    if settings.in_memory:
        click.echo(f"WARNING: {IN_MEMORY_NOTE}", err=True)
    try:
        event_loop.run(run_console(settings, host or settings.http_host, port), settings.event_loop)
    except (ConfigurationError, StoreUnavailableError, ConnectionError) as error:
        raise click.ClickException(str(error)) from None
