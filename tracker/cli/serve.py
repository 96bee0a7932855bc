"""``tracker serve MODULE...``: the service. Runs the tracked consumers of the modules, the
deadline listener and sweeper, and the metrics/health endpoint in one process."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable
from types import ModuleType

import click
import structlog
from fastapi import APIRouter
from prometheus_client import disable_created_metrics

from tracker.cli.app import state
from tracker.consumer import TrackedConsumer
from tracker.errors import ConfigurationError, HandlerInterrupt, StoreUnavailableError
from tracker.logging import configure_logging
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.service import event_loop
from tracker.service.assembly import Service, ServiceOptions
from tracker.settings import Settings
from tracker.store import connection

log = structlog.get_logger("tracker.serve")

IN_MEMORY_WARNING = (
    "TRACKER_MONGODB_URL is not set: running on the IN-MEMORY MongoDB. Nothing persists and "
    "nothing is shared with other processes: operate this service through its HTTP API "
    "(`tracker --service URL ...`, the console) and feed it with POST /api/v1/tasks. "
    "Set TRACKER_MONGODB_URL for anything but a trial."
)


def consumers_of(module: ModuleType) -> list[TrackedConsumer]:
    """The module's ``CONSUMERS`` list if it has one, else every ``@tracked`` consumer in it."""
    declared = getattr(module, "CONSUMERS", None)
    if declared is not None:
        found = list(declared)
    else:
        found = [value for value in vars(module).values() if isinstance(value, TrackedConsumer)]
    if not found or not all(isinstance(c, TrackedConsumer) for c in found):
        raise click.UsageError(f"module {module.__name__!r} has no @tracker.tracked consumers")
    return found


def router_of(module: ModuleType) -> APIRouter | None:
    """The module's ``ROUTER``: HTTP routes of its own, served under ``/api/v1``."""
    declared = getattr(module, "ROUTER", None)
    if declared is not None and not isinstance(declared, APIRouter):
        raise click.UsageError(
            f"{module.__name__}.ROUTER must be a fastapi.APIRouter, not {type(declared).__name__}"
        )
    return declared


def load(modules: tuple[str, ...]) -> tuple[list[TrackedConsumer], list[APIRouter]]:
    """Import each module, from the current directory first as ``python -m`` would: the
    consumers, and the routers of those that have one."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    consumers: list[TrackedConsumer] = []
    routers: list[APIRouter] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise click.UsageError(f"cannot import {name!r}: {error}") from error
        consumers.extend(consumers_of(module))
        if (router := router_of(module)) is not None:
            routers.append(router)
    return consumers, routers


async def serve_until_signalled(
    consumers: list[TrackedConsumer],
    settings: Settings,
    options: ServiceOptions,
    routers: list[APIRouter] | None = None,
) -> None:
    """Connect, bring the indexes in step, run the service until SIGTERM/SIGINT."""
    await connection.connect(settings.mongodb_url, settings.database, sharded=settings.sharded)
    try:
        created = await connection.ensure_indexes(settings.search_keys, settings.audit_retention)
        if created.create or created.drop:
            log.info("indexes brought in step", created=created.create, dropped=created.drop)
        service = Service(
            consumers,
            AioPikaTransport(
                settings.amqp_url,
                prefetch=options.concurrency,
                quorum_group_size=settings.quorum_group_size,
            ),
            options,
            routers=routers or (),
        )
        await service.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _stopper(service, options.shutdown_timeout))
        await service.run_forever()
    finally:
        await connection.disconnect()


def _stopper(service: Service, shutdown_timeout: float) -> Callable[[], None]:
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            log.info("signal received: stopping gracefully", shutdown_timeout=shutdown_timeout)
            stopping.append(asyncio.get_running_loop().create_task(service.stop()))

    return stop


@click.command()
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Messages in flight per queue.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds in-flight handlers get to finish.",
)
@click.option(
    "--host",
    help="Address of the HTTP endpoint (default TRACKER_HTTP_HOST, else 127.0.0.1; 0.0.0.0: "
    "every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port of the HTTP endpoint (default TRACKER_HTTP_PORT, else 9464).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    modules: tuple[str, ...],
    concurrency: int,
    shutdown_timeout: float,
    host: str | None,
    port: int | None,
) -> None:
    """Run the tracked consumers of MODULES (e.g. consumers.reports) as a service.

    One process runs the consumers, the timeout listener, the sweeper and the HTTP endpoint
    (/livez, /healthz, /metrics, the API under /api/v1 with the ROUTER of each module that
    has one, and the console at /; see TRACKER_API_TOKENS in docs/console.md). Logs are JSON
    lines unless TRACKER_LOG_FORMAT is console. SIGTERM or SIGINT stops it gracefully. It
    exits 1 when it cannot start (MongoDB or RabbitMQ unreachable, the port taken), with the
    reason on one line.
    """
    settings = state(ctx).settings
    # A service logs JSON lines unless told otherwise.
    log_format = settings.log_format if "TRACKER_LOG_FORMAT" in os.environ else "json"
    configure_logging(log_format, settings.log_level)
    consumers, routers = load(modules)
    # The service's exposition without the `_created` twin of every counter: half the size,
    # and nothing in the dashboards or rules reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if settings.in_memory:
        log.warning(IN_MEMORY_WARNING)
        click.echo(f"WARNING: {IN_MEMORY_WARNING}", err=True)
    options = ServiceOptions(
        concurrency=concurrency,
        shutdown_timeout=shutdown_timeout,
        http_port=settings.service_http_port if port is None else port,
        http_host=host or settings.http_host,
        api_tokens=settings.api_tokens,
        redact_fields=settings.redact_fields,
    )
    try:
        factory = event_loop.loop_factory(settings.event_loop)
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    log.info(
        "serving",
        queues=[c.queue for c in consumers],
        http=f"{options.http_host}:{options.http_port}",
        database=settings.database,
        event_loop="asyncio" if factory is None else "uvloop",
    )
    try:
        event_loop.run(
            serve_until_signalled(consumers, settings, options, routers), settings.event_loop
        )
    except HandlerInterrupt as interrupt:
        click.echo(f"tracker serve: {interrupt}", err=True)
        raise SystemExit(interrupt.exit_code) from None
    except (ConfigurationError, StoreUnavailableError, ConnectionError) as error:
        raise click.ClickException(str(error)) from None
