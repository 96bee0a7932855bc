"""The console's access check: a signed-in (or, without tokens, local) caller with the role
a page needs; without a session, the sign-in page."""

from __future__ import annotations

from fastapi import Request

from tracker.operations.actors import Actor
from tracker.web.access import access_of, require
from tracker.web.failures import LoginRequired


def _caller(request: Request) -> Actor:
    caller = access_of(request).caller(request, "ui")
    if caller is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(f"{request.url.path}{query}" if request.method == "GET" else "/")
    request.state.caller = caller
    return caller


async def ui_viewer(request: Request) -> Actor:
    """Dependency of every page."""
    return _caller(request)


async def ui_operator(request: Request) -> Actor:
    """Dependency of the console's actions (form posts)."""
    return require(_caller(request), "operator")
