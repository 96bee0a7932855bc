"""A small HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for orchestrators.

It is plain asyncio, so it needs no web framework and runs in the worker's event loop. It
answers from memory: ``/metrics`` renders the registry; ``/healthz`` runs the health checks,
each bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("tracker.http")

HealthCheck = Callable[[], Awaitable[bool]]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class MetricsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Mapping[str, HealthCheck] | None = None,
        host: str = "0.0.0.0",
        port: int = 0,
        check_timeout: float = 2.0,
    ) -> None:
        self.registry = registry
        self.checks = dict(checks or {})
        self.host = host
        self.port = port
        self.check_timeout = check_timeout
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics endpoint listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def health(self) -> tuple[bool, dict[str, bool]]:
        async def run(check: HealthCheck) -> bool:
            try:
                async with asyncio.timeout(self.check_timeout):
                    return await check()
            except Exception:
                return False

        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[name]) for name in names))
        report = dict(zip(names, results, strict=True))
        return all(results), report

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            method, path = _request_line(request)
            if method not in ("GET", "HEAD"):
                status, body, content_type = 405, b"use GET\n", "text/plain"
            elif path == "/metrics":
                status, body, content_type = (
                    200,
                    generate_latest(self.registry),
                    CONTENT_TYPE_LATEST,
                )
            elif path == "/healthz":
                healthy, report = await self.health()
                status = 200 if healthy else 503
                body = json.dumps({"healthy": healthy, "checks": report}).encode() + b"\n"
                content_type = "application/json"
            else:
                status, body, content_type = 404, b"try /metrics or /healthz\n", "text/plain"
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _request_line(line: bytes) -> tuple[str, str]:
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        raise ValueError("malformed request line")
    return parts[0].upper(), parts[1].split("?", 1)[0]
