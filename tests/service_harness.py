"""The service's HTTP side inside the test process, for running the command line through its
service backend without a network: the API app on the in-memory store of the test's
database, a publisher on the broker opened when something publishes, and a replay runner,
all started in the event loop of the command's own requests and stopped when its HTTP
client closes (each command runs its own loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from prometheus_client import CollectorRegistry

import tracker
from tracker.api_tokens import ApiToken
from tracker.cli.app import CliState, ServiceTarget
from tracker.operations.replays import ReplayRunner
from tracker.rabbit.aio_transport import AioPikaTransport
from tracker.settings import Settings
from tracker.store import connection
from tracker.transport import Transport
from tracker.web.access import Access
from tracker.web.app import create_app
from tracker.web.context import Operator
from tracker.web.health import Health

OPERATOR = ApiToken("ana", "operator", "a-test-token-of-ana-0123")
VIEWER = ApiToken("vic", "viewer", "a-test-token-of-vic-0123")
URL = "http://127.0.0.1:9464"
T = TypeVar("T")


def on_store(database: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` in an event loop of its own on the in-memory store of ``database``, as a
    command sees it, between the commands of a test."""

    async def connected() -> T:
        await tracker.connect(None, database)
        try:
            return await work()
        finally:
            await tracker.disconnect()

    return asyncio.run(connected())


@dataclass(frozen=True)
class InProcessService:
    """``database``: the in-memory store's database; ``amqp_url``: the broker it publishes
    to and imports from."""

    database: str
    amqp_url: str

    def transport(self) -> httpx.AsyncBaseTransport:
        return _Running(self)


class _Running(httpx.AsyncBaseTransport):
    def __init__(self, service: InProcessService) -> None:
        self.service = service
        self.app: httpx.ASGITransport | None = None
        self.operator: Operator | None = None
        self.runner: ReplayRunner | None = None
        self.connected = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.app is None:
            await self._start()
        assert self.app is not None
        return await self.app.handle_async_request(request)

    async def _start(self) -> None:
        # The service's own database, whatever an earlier command left connected.
        if not connection.is_connected() or connection.database().name != self.service.database:
            await tracker.connect(None, self.service.database)
            self.connected = True
        url = self.service.amqp_url

        async def open_transport() -> Transport:
            transport = AioPikaTransport(url, connect_timeout=5)
            await transport.open()
            return transport

        operator = Operator(
            Access((OPERATOR, VIEWER), "127.0.0.1"),
            open_transport=open_transport,
            amqp_url=url,
            service=True,
        )
        self.operator = operator
        self.runner = ReplayRunner(operator.publish, owner="test-service", interval=0.1, poll=0.1)
        self.runner.start()
        app = create_app(CollectorRegistry(), Health(), operator=operator)
        # An error no handler expected is a 500, as a server answers it.
        self.app = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        if self.operator is not None:
            await self.operator.close()
        if self.connected:
            await tracker.disconnect()


def through_service(
    database: str, settings: Settings | None = None, token: ApiToken = OPERATOR
) -> CliState:
    """A command line state that operates the in-process service on ``database`` (which
    the test seeds and reads directly too)."""
    chosen = settings or Settings()
    service = InProcessService(database, chosen.amqp_url)
    target = ServiceTarget(URL, token.token, service.transport)
    return CliState(settings=chosen, in_memory_database=database, service=target)


def cli_state(database: str, backend: str, settings: Settings | None = None) -> CliState:
    """The command line on ``database`` through ``backend``: ``direct`` (the in-memory
    store of this process) or ``service`` (``through_service``)."""
    if backend == "service":
        return through_service(database, settings)
    return CliState(settings=settings or Settings(), in_memory_database=database)
