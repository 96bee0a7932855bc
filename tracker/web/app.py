"""The HTTP app of the service: health and metrics for machines (always served), and the
operator's API and console (with the access rules of ``access``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from tracker.web import failures, health, metrics
from tracker.web.context import Operator
from tracker.web.health import Health
from tracker.web.limits import BodyLimit, install_error_handlers
from tracker.web.server import MAX_BODY_BYTES

STATIC = Path(__file__).parent / "static"


def create_app(
    registry: CollectorRegistry,
    health_checks: Health,
    routers: Iterable[APIRouter] = (),
    operator: Operator | None = None,
) -> FastAPI:
    """The app: ``/livez``, ``/healthz``, ``/metrics``, ``routers``, and with ``operator``
    the API under ``/api/v1`` and the console at ``/``."""
    app = FastAPI(
        title="tracker",
        summary="The operator API of the task tracker",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    install_error_handlers(app)
    app.include_router(health.router(health_checks))
    app.include_router(metrics.router(registry))
    for extra in routers:
        app.include_router(extra)
    if operator is not None:
        from tracker.web import api, pages

        app.state.operator = operator
        app.state.access = operator.access
        failures.install(app)
        app.include_router(api.router())
        app.include_router(pages.router())
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app
