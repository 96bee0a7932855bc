"""The HTTP endpoint tells the truth and holds its bounds: liveness and readiness, a body
limit, no stack traces, a port that cannot be bound stops the service at start."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry

import tracker
from tests.rabbit import Broker
from tracker import TaskContext
from tracker.errors import ConfigurationError
from tracker.web.app import create_app
from tracker.web.health import Health
from tracker.web.server import MAX_BODY_BYTES, HttpServer, bind

ROOT = Path(__file__).resolve().parent.parent


async def answers() -> bool:
    return True


async def never_answers() -> bool:
    await asyncio.sleep(60)
    return True


async def refuses() -> bool:
    raise ConnectionError("down")


def failing_router() -> APIRouter:
    routes = APIRouter()

    @routes.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail in the traceback")

    @routes.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return routes


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    health = Health({"mongodb": never_answers, "rabbitmq": refuses, "other": answers}, timeout=0.2)
    server = HttpServer(create_app(CollectorRegistry(), health, [failing_router()]))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield http
    finally:
        await server.stop()


async def test_livez_answers_while_the_loop_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert (response.status_code, response.json()) == (200, {"live": True})


async def test_healthz_names_each_failed_check_within_its_bound(
    client: httpx.AsyncClient,
) -> None:
    # When: one check never answers, another fails
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get("/healthz")
    # Then: not ready, within the bound (five times over), each failure named
    assert loop.time() - started < 5 * 0.2 + 1
    assert response.status_code == 503
    body = response.json()
    assert body["healthy"] is False
    assert body["checks"] == {"mongodb": False, "rabbitmq": False, "other": True}
    assert body["failed"] == ["mongodb", "rabbitmq"]


async def test_a_body_over_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    fine = await client.post("/echo", content=b"x" * 1000)
    assert fine.json() == {"bytes": 1000}
    declared = await client.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
    assert declared.status_code == 413
    assert "limit" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * (MAX_BODY_BYTES // 2 + 1)

    streamed = await client.post("/echo", content=chunks())
    assert streamed.status_code == 413


async def test_errors_say_little_and_never_show_a_traceback(client: httpx.AsyncClient) -> None:
    boom = await client.get("/boom")
    assert (boom.status_code, boom.json()) == (500, {"error": "internal error"})
    assert "Traceback" not in boom.text
    assert "secret" not in boom.text
    missing = await client.get("/no/such/page")
    assert missing.status_code == 404
    assert "Traceback" not in missing.text


async def test_a_port_in_use_is_a_clear_error() -> None:
    # Given: the port is taken
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        # When / Then
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            await HttpServer(create_app(CollectorRegistry(), Health()), port=port).start()
    finally:
        taken.close()


def test_an_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot listen on no-such-host\.invalid"):
        bind("no-such-host.invalid", 0)


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_the_endpoint_binds_the_loopback_unless_told(broker: Broker) -> None:
    queue = await broker.new_queue()

    @tracker.tracked(queue)
    async def handle(task: TaskContext) -> None: ...

    worker = tracker.Worker([handle], broker.url, metrics_port=0)
    assert worker.http_server is not None
    assert worker.http_server.host == "127.0.0.1"


@pytest.mark.rabbitmq
async def test_serve_exits_non_zero_at_start_when_its_port_is_taken(broker: Broker) -> None:
    # Given: another process holds the port
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    queue = f"serve-{uuid.uuid4().hex[:8]}"
    broker.queues.append(queue)
    env = {**os.environ, "SERVE_TEST_QUEUE": queue, "TRACKER_AMQP_URL": broker.url}
    env.pop("TRACKER_MONGODB_URL", None)
    try:
        # When
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tracker.cli",
            "serve",
            "tests.serve_target",
            "--port",
            str(port),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            code = await process.wait()
        stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    finally:
        taken.close()
    # Then: exit 1, one line that says why, no traceback, and nothing consumed the queue
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (another process "
        "has it: stop it, or set TRACKER_HTTP_PORT / --port)"
    ]
    assert "Traceback" not in stderr
    with socket.create_connection(("127.0.0.1", 5672), timeout=2):
        pass  # the broker is fine; the service never got as far as declaring
    assert await broker.exists(queue) is False
