"""The console: server-rendered pages at ``/``, with htmx (vendored) for live parts."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tracker.web.csrf import same_origin


def router() -> APIRouter:
    """Every page, behind the origin check (each page adds its access check)."""
    from tracker.web.pages import groups, login, overview, replays, tasks

    pages = APIRouter(include_in_schema=False, dependencies=[Depends(same_origin)])
    for module in (login, overview, groups, replays, tasks):
        pages.include_router(module.router)
    return pages
