"""``/metrics``: the registry in Prometheus' text format, rendered from memory (queue
statistics are refreshed in the background, so a scrape never waits on MongoDB)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def router(registry: CollectorRegistry) -> APIRouter:
    routes = APIRouter(tags=["metrics"])

    @routes.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return routes
