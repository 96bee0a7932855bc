"""Signing in to the console with a token, and out again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from tracker.web import csrf, sessions
from tracker.web.access import access_of
from tracker.web.pages.render import render

router = APIRouter(include_in_schema=False)


def _next(value: str) -> str:
    """Where to go after signing in: a path of this console, never another site."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:1000]
    return "/"


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    access = access_of(request)
    if not access.tokens:
        access.caller(request, "ui")  # 403 off loopback: there is nothing to sign in with
        return RedirectResponse("/", 303)
    return render(request, "login.html", {"next": _next(next), "error": None})


@router.post("/login", dependencies=[Depends(csrf.check_form)])
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    found = access_of(request).token(token.strip())
    if found is None:
        context = {"next": _next(next), "error": "That token is not in TRACKER_API_TOKENS."}
        return render(request, "login.html", context, status=401)
    response = RedirectResponse(_next(next), 303)
    response.set_cookie(
        sessions.COOKIE,
        sessions.sign(found),
        max_age=sessions.LIFETIME_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", dependencies=[Depends(csrf.check_form)])
async def logout() -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
