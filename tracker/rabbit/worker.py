"""``Worker``: the tracked consumers of ``tracker.service`` on the aio-pika transport."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TypedDict

from tracker.api_tokens import ApiToken
from tracker.constants import DEFAULT_AMQP_URL
from tracker.consumer import TrackedConsumer
from tracker.middleware import Middleware
from tracker.observability import TrackerMetrics
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.rabbit.topology import DEFAULT_DELIVERY_LIMIT
from tracker.service.assembly import Service, ServiceOptions
from tracker.settings import Settings


class Worker(Service):
    """Consume the queues of ``consumers`` with at most ``concurrency`` messages in flight
    per queue (the prefetch).

    ``async with Worker([...], amqp_url):`` starts consuming and, on exit, stops gracefully:
    no new deliveries, in-flight handlers get ``shutdown_timeout`` seconds to finish, the rest
    are cancelled and their deliveries left unacked for redelivery, their claims released.
    The connection is robust: it reconnects and resumes consuming after a broker restart.

    ``metrics_port`` (default: ``TRACKER_HTTP_PORT`` when set) serves ``/metrics``,
    ``/healthz``, the API and the console (``TRACKER_API_TOKENS``); ``stats_interval`` and
    ``sweep_interval`` (None: off) run the queue-statistics collector and the sweeper in
    this process; ``quorum_group_size``: the replicas of each queue it creates (None: the
    broker's default); ``freeze_startup_objects``: once started, hide what the process made
    so far from the cyclic garbage collector, once per process (``tracker.service.memory``).

    Starting, it declares the queues of every consumer; the delay and deadline queues of an
    earlier version are rebuilt with their messages (``tracker.rabbit.upgrade``).
    """

    def __init__(
        self,
        consumers: Iterable[TrackedConsumer],
        amqp_url: str | None = None,
        *,
        concurrency: int = 10,
        shutdown_timeout: float = 30.0,
        lease: float = 30.0,
        requeue_delay: float = 1.0,
        store_retry_budget: float = 10.0,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        middleware: Iterable[Middleware] = (),
        worker_id: str | None = None,
        metrics: TrackerMetrics | None = None,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        stats_interval: float | None = 15.0,
        timeout_grace: float = 5.0,
        sweep_interval: float | None = 60.0,
        stuck_grace: float = 30.0,
        republish_after: float = 600.0,
        quorum_group_size: int | None = None,
        freeze_startup_objects: bool = True,
    ) -> None:
        options = ServiceOptions(
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
            lease=lease,
            requeue_delay=requeue_delay,
            store_retry_budget=store_retry_budget,
            timeout_grace=timeout_grace,
            stats_interval=stats_interval,
            sweep_interval=sweep_interval,
            stuck_grace=stuck_grace,
            republish_after=republish_after,
            worker_id=worker_id,
            freeze_startup_objects=freeze_startup_objects,
            **_http_options(metrics_port, metrics_host),
        )
        transport = AioPikaTransport(
            amqp_url or DEFAULT_AMQP_URL,
            prefetch=concurrency,
            delivery_limit=delivery_limit,
            quorum_group_size=quorum_group_size,
        )
        super().__init__(consumers, transport, options, middleware=middleware, metrics=metrics)
        self.amqp_url = transport.url
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.delivery_limit = delivery_limit

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _HttpOptions(TypedDict):
    http_port: int | None
    http_host: str
    api_tokens: tuple[ApiToken, ...]
    redact_fields: frozenset[str]


def _http_options(port: int | None, host: str | None) -> _HttpOptions:
    """The endpoint's port and host (the arguments, else the environment's settings), and
    its tokens and redacted fields (a Worker is an entry point of its own, so it reads
    them once, here)."""
    settings = Settings.from_env()
    return {
        "http_port": settings.http_port if port is None else port,
        "http_host": settings.http_host if host is None else host,
        "api_tokens": settings.api_tokens,
        "redact_fields": settings.redact_fields,
    }
