"""The HTTP app of the service: health and metrics for machines (always served), and the
operator's API and console (with the access rules of ``auth``)."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from tracker.web import health, metrics
from tracker.web.health import Health
from tracker.web.limits import BodyLimit, install_error_handlers
from tracker.web.server import MAX_BODY_BYTES


def create_app(
    registry: CollectorRegistry,
    health_checks: Health,
    routers: Iterable[APIRouter] = (),
) -> FastAPI:
    """The app: ``/livez``, ``/healthz``, ``/metrics``, and ``routers`` (the API and the
    console, contributed by the service)."""
    app = FastAPI(
        title="tracker",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    install_error_handlers(app)
    app.include_router(health.router(health_checks))
    app.include_router(metrics.router(registry))
    for extra in routers:
        app.include_router(extra)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app
