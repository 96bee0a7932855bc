"""``/livez`` and ``/healthz``.

``/livez`` answers 200 while the process and its event loop run: an orchestrator restarts
the process when it stops answering. ``/healthz`` is the readiness check: 200 when every
check passes within its bound, else 503 with a JSON body naming each failed check; an
orchestrator stops sending work to the process meanwhile, and does not restart it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Response

HealthCheck = Callable[[], Awaitable[bool]]


@dataclass
class Health:
    """``checks``: name -> a check that answers True when that dependency is ready;
    ``details``: extra facts for the body (e.g. the broker node connected to)."""

    checks: Mapping[str, HealthCheck] = field(default_factory=dict)
    details: Callable[[], dict[str, Any]] = dict
    timeout: float = 2.0

    async def report(self) -> tuple[bool, dict[str, bool]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[name]) for name in names))
        report = dict(zip(names, results, strict=True))
        return all(results), report

    async def _run(self, check: HealthCheck) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await check())
        except Exception:  # a check that fails or does not answer in time is not ready
            return False


def _json(data: Any, status: int) -> Response:
    # Readable separators (", " and ": ") for people reading probes with curl.
    body = json.dumps(data, sort_keys=True).encode() + b"\n"
    return Response(body, status_code=status, media_type="application/json")


def router(health: Health) -> APIRouter:
    routes = APIRouter(tags=["health"])

    @routes.get("/livez", summary="The process and its event loop run")
    async def livez() -> Response:
        return _json({"live": True}, 200)

    @routes.get("/healthz", summary="Ready: MongoDB and RabbitMQ answer")
    async def healthz() -> Response:
        healthy, checks = await health.report()
        body: dict[str, Any] = {"healthy": healthy, "checks": checks, **health.details()}
        if not healthy:
            body["failed"] = sorted(name for name, ok in checks.items() if not ok)
        return _json(body, 200 if healthy else 503)

    return routes
