"""The report service's API for tests: the app with the report routes on an operator (with or
without a broker connection), reports run to completion without a broker, and polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

import tracker
from consumers import report_api, reports
from consumers.report_files import ReportFiles
from consumers.report_request import Request
from tracker.api_tokens import ApiToken
from tracker.consumer import task_context
from tracker.delivery.envelope import OutgoingMessage
from tracker.delivery.outcomes import Outcomes
from tracker.models import TaskTracker
from tracker.transport import Transport
from tracker.web.access import Access
from tracker.web.app import create_app
from tracker.web.context import Operator
from tracker.web.health import Health

VIEWER = ApiToken("vera", "viewer", "v" * 24)
OPERATOR = ApiToken("otto", "operator", "o" * 24)
AS_VIEWER = {"authorization": f"Bearer {VIEWER.token}"}
AS_OPERATOR = {"authorization": f"Bearer {OPERATOR.token}"}
JSON = {"content-type": "application/json"}


class RecordingTransport:
    """A transport that keeps what is published instead of sending it (for tests that only
    check what reaches the broker, or that nothing does)."""

    is_open = True
    node = None
    on_failover = None

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []

    async def declare_work_queue(self, queue: str) -> None:
        return None

    async def publish(self, message: OutgoingMessage, *, confirm: bool = True) -> None:
        self.published.append(message)


@contextlib.asynccontextmanager
async def report_api_client(
    queue: str,
    files: ReportFiles,
    transport: Transport | RecordingTransport | None = None,
    *,
    tokens: tuple[ApiToken, ...] = (),
    host: str = "127.0.0.1",
    base_url: str = "http://127.0.0.1:9464",
) -> AsyncIterator[httpx.AsyncClient]:
    """The service's app with the report routes for ``queue``, publishing on ``transport``."""
    operator = Operator(Access(tokens, host), transport=transport)  # type: ignore[arg-type]
    app = create_app(
        CollectorRegistry(),
        Health(),
        operator=operator,
        api_routers=[report_api.router(queue, files)],
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, timeout=30
    ) as http:
        yield http


async def finished_report(
    files: ReportFiles,
    params: dict[str, Any],
    fmt: str = "csv",
    *,
    queue: str = reports.QUEUE,
    retention: float = 7 * 86400,
) -> TaskTracker:
    """A report enqueued, run by the real handler and completed as a worker records it,
    without a broker: its record (with ``expiresAt`` from ``retention``) and its file."""
    consumer = reports.consumer(queue, files, retention=retention)
    request = Request.parse({"params": params, "format": fmt})
    created = await tracker.create_execution(
        request.id, queue, {"params": params, "format": fmt}, metadata={"format": fmt}
    )
    execution_id = created.execution.execution_id
    won = await tracker.claim(execution_id, worker="test-worker", lease=60)
    claimed = await TaskTracker.find_execution(execution_id)
    assert claimed is not None
    assert won.token is not None
    task = task_context(claimed, consumer, claimed.payload)
    await Outcomes(consumer, "test-worker").complete(task, won.token, await consumer(task))
    done = await TaskTracker.find_execution(execution_id)
    assert done is not None
    return done


async def poll(
    http: httpx.AsyncClient,
    report: str,
    until: tuple[str, ...] = ("SUCCESS", "FAIL"),
    within: float = 60,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report's status once it is one of ``until`` (a generous bound: shared cores)."""
    async with asyncio.timeout(within):
        while True:
            response = await http.get(f"/api/v1/reports/{report}", headers=headers)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in until:
                return body
            await asyncio.sleep(0.1)
