"""Protection against cross-site requests, for the console's forms and the API alike.

Two checks, each enough against today's browsers, together against older ones:

- *Origin*: a browser names the page that sent a POST (``Origin``, ``Sec-Fetch-Site``); a
  request that comes from another site is refused. Clients that are not browsers (curl, the
  CLI, scripts) send neither and pass.
- *Double submit* (forms): every page sets a random ``tracker_csrf`` cookie (``SameSite=Strict``)
  and puts the same value in its forms; a form post must carry both, equal. Another site can
  neither read the cookie nor make the browser send it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response

COOKIE: Final = "tracker_csrf"
FIELD: Final = "csrf_token"
HEADER: Final = "x-csrf-token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def token_for(request: Request) -> str:
    """The request's CSRF token: its cookie's if well formed, else a new one (which
    ``remember`` then sets on the response)."""
    current = request.cookies.get(COOKIE, "")
    if (
        20 <= len(current) <= 64
        and current.isascii()
        and current.replace("-", "").replace("_", "").isalnum()
    ):
        return current
    return secrets.token_urlsafe(24)


def remember(request: Request, response: Response, token: str) -> None:
    if request.cookies.get(COOKIE) != token:
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )


def check_origin(request: Request) -> None:
    """403 for an unsafe request a browser sent from another site."""
    if request.method in _SAFE_METHODS:
        return
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(403, "cross-site request refused: the Origin is not this console")


async def same_origin(request: Request) -> None:
    """Dependency of every API and console route."""
    check_origin(request)


async def check_form(request: Request) -> None:
    """Dependency of the console's form posts: the origin, then the double-submitted token
    (in the form field or the ``X-CSRF-Token`` header)."""
    check_origin(request)
    cookie = request.cookies.get(COOKIE, "")
    sent = request.headers.get(HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(FIELD)
        sent = value if isinstance(value, str) else ""
    if not cookie or not hmac.compare_digest(
        cookie.encode(), sent.encode("utf-8", "surrogatepass")
    ):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
