"""The HTTP app of the service: health and metrics for machines (always served), and the
operator's API and console (with the access rules of ``access``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

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
    api_routers: Iterable[APIRouter] = (),
) -> FastAPI:
    """The app: ``/livez``, ``/healthz``, ``/metrics``, ``routers``, and with ``operator``
    the API under ``/api/v1`` (``api_routers`` beside its own, under its access rules) and
    the console at ``/``."""
    api_routers = tuple(api_routers)
    if api_routers and operator is None:
        raise ValueError("API routes need the API: pass the operator with them")
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
        app.include_router(api.router(api_routers))
        app.include_router(pages.router())
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    _document_bad_input_as_400(app)
    return app


BAD_INPUT: Final[dict[str, Any]] = {
    "description": "Bad input: the reason in `error`",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}


def _document_bad_input_as_400(app: FastAPI) -> None:
    """FastAPI documents bad input as its own 422 shape; the API answers 400 with
    ``{"error": reason}`` (the error handlers), and its OpenAPI document says so."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if _generated(responses.get("422")):
                    del responses["422"]
                if "parameters" in operation or "requestBody" in operation:
                    responses.setdefault("400", BAD_INPUT)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _generated(response: Any) -> bool:
    """Whether ``response`` is FastAPI's own 422 (a route's declared 422 stays)."""
    if not isinstance(response, dict):
        return False
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")
