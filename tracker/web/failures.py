"""What the operations layer raises, as HTTP: bad input 400, no such thing 404, not in this
state 409, MongoDB or RabbitMQ out of reach 503. The API answers JSON ``{"error": ...}``; the
console an HTML page with the same sentence. Never a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException

from tracker.errors import (
    ConflictError,
    NotFoundError,
    PublishError,
    StoreUnavailableError,
    TaskNotFoundError,
    TrackerError,
)
from tracker.store.errors import is_store_error, is_transient
from tracker.validation import printable
from tracker.web.limits import reasons

log = structlog.get_logger("tracker.http")
_MESSAGE_CHARS: Final = 500


class LoginRequired(Exception):
    """A console page was asked for without a session: the sign-in page, then back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _status(exc: Exception) -> tuple[int, str]:
    message = printable(str(exc), _MESSAGE_CHARS)
    if isinstance(exc, NotFoundError | TaskNotFoundError):
        return 404, message
    if isinstance(exc, ConflictError):
        return 409, message
    if isinstance(exc, PermissionError):
        return 403, message
    if isinstance(exc, ValueError | TypeError):
        return 400, message
    if isinstance(exc, StoreUnavailableError) or (is_store_error(exc) and is_transient(exc)):
        return 503, "MongoDB is unavailable; try again shortly"
    if isinstance(exc, PublishError):
        return 503, message
    return 500, "internal error"


def error_response(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The API's JSON error, or the console's error page."""
    if is_api(request) or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    from tracker.web.pages.render import render

    return render(request, "error.html", {"status": status, "message": message}, status=status)


def install(app: FastAPI) -> None:
    """The handlers of the operator routes (installed with them)."""

    @app.exception_handler(LoginRequired)
    async def login(request: Request, exc: LoginRequired) -> Response:
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", 303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 400, "; ".join(reasons(exc)) or "invalid request")

    async def failed(request: Request, exc: Exception) -> Response:
        status, message = _status(exc)
        if status == 500:
            log.error("request failed", path=request.url.path, error=type(exc).__name__)
        elif status == 503:
            log.warning("request failed", path=request.url.path, error=type(exc).__name__)
        return error_response(request, status, message)

    # The classes the operations layer raises; anything else stays the generic 500.
    for kind in (ValueError, TypeError, PermissionError, TrackerError, PyMongoError):
        app.add_exception_handler(kind, failed)
