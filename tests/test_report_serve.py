"""`tracker serve` mounts a consumer module's ROUTER under /api/v1 with the API's rules."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path
from types import ModuleType

import click
import httpx
import pytest

from tests.rabbit import Broker
from tracker.cli.serve import router_of

ROOT = Path(__file__).resolve().parent.parent


def test_a_router_that_is_not_an_api_router_is_a_usage_error() -> None:
    # Given
    module = ModuleType("consumers.broken")
    module.ROUTER = object()  # type: ignore[attr-defined]
    # When / Then
    with pytest.raises(click.UsageError, match=r"ROUTER must be a fastapi\.APIRouter"):
        router_of(module)
    assert router_of(ModuleType("consumers.plain")) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.rabbitmq
async def test_serve_mounts_the_report_routes_beside_the_api(
    broker: Broker, tmp_path: Path
) -> None:
    # Given: `tracker serve` on a report module, with tokens
    queue = f"serve-reports-{uuid.uuid4().hex[:8]}"
    broker.queues.append(queue)
    port = _free_port()
    operator, viewer = "o" * 24, "v" * 24
    env = {
        **os.environ,
        "SERVE_TEST_QUEUE": queue,
        "SERVE_TEST_REPORTS_DIR": str(tmp_path),
        "TRACKER_HTTP_PORT": str(port),
        "TRACKER_AMQP_URL": broker.url,
        "TRACKER_API_TOKENS": f"otto:operator:{operator},vera:viewer:{viewer}",
    }
    env.pop("TRACKER_MONGODB_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker.cli",
        "serve",
        "tests.serve_report_target",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            # When: a client submits with the operator's token and polls with the viewer's
            body = {"params": {"rows": 5}, "format": "csv"}
            anonymous = await http.post("/api/v1/reports", json=body)
            submitted = await http.post(
                "/api/v1/reports", json=body, headers={"authorization": f"Bearer {operator}"}
            )
            report = submitted.json()["id"]
            as_viewer = {"authorization": f"Bearer {viewer}"}
            async with asyncio.timeout(30):
                while (await http.get(f"/api/v1/reports/{report}", headers=as_viewer)).json()[
                    "status"
                ] != "SUCCESS":
                    await asyncio.sleep(0.2)
            document = await http.get(f"/api/v1/reports/{report}/download", headers=as_viewer)
            openapi = (await http.get("/api/v1/openapi.json")).json()
    finally:
        process.terminate()
        async with asyncio.timeout(20):
            await process.wait()

    # Then: the routes answer under /api/v1, behind the tokens, in the OpenAPI document
    assert anonymous.status_code == 401
    assert submitted.status_code == 202
    assert document.status_code == 200
    assert len(document.text.splitlines()) == 1 + 5
    assert "/api/v1/reports/{report_id}/download" in openapi["paths"]


def test_api_routes_without_the_api_are_refused() -> None:
    # Given: an app without the operator API (health and metrics only)
    from fastapi import APIRouter
    from prometheus_client import CollectorRegistry

    from tracker.web.app import create_app
    from tracker.web.health import Health

    # When / Then: routes meant for /api/v1 cannot be served without its access rules
    with pytest.raises(ValueError, match="API routes need the API"):
        create_app(CollectorRegistry(), Health(), api_routers=[APIRouter()])
