"""The HTTP API under ``/api/v1``: one router per concern, each behind the access rules.

To add endpoints, write a module with a ``router`` and add it to ``routers()``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tracker.web.access import api_viewer
from tracker.web.csrf import same_origin

PREFIX = "/api/v1"


def routers() -> list[APIRouter]:
    """The API's routers; every route of each needs at least a viewer."""
    from tracker.web.api import audit, groups, queues, replays, tasks

    return [queues.router, tasks.router, groups.router, replays.router, audit.router]


def router() -> APIRouter:
    api = APIRouter(prefix=PREFIX, dependencies=[Depends(same_origin), Depends(api_viewer)])
    for child in routers():
        api.include_router(child)
    return api
