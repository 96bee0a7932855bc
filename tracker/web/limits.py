"""What every request meets before a route: a bound on the body, and errors that say what
was wrong without a stack trace."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.validation import printable

log = structlog.get_logger("tracker.http")


class BodyLimit:
    """Refuses (413) a request whose body is over ``limit`` bytes: by its Content-Length
    before anything is read, or as it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _refuse(send, self.limit)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, bounded, send)
        except _TooLarge:
            await _refuse(send, self.limit)


class _TooLarge(Exception):
    pass


async def _refuse(send: Send, limit: int) -> None:
    body = f'{{"error": "the request body is over the {limit}-byte limit"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Bad input is a 400 with the reason; anything unexpected a 500 that says no more (the
    details go to the log)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "; ".join(reasons(exc)) or "invalid request"}, status_code=400
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed", path=request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)


def reasons(exc: RequestValidationError) -> list[str]:
    """What was wrong with a request, one short sentence per problem (never the value)."""
    return [_reason(error) for error in exc.errors()]


def _reason(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = printable(str(error.get("msg", "invalid")), 200)
    return f"{printable(where, 200)}: {message}" if where else message
