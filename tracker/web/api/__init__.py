"""The HTTP API under ``/api/v1``: one router per concern, each behind the access rules.

To add endpoints, write a module with a ``router`` and add it to ``routers()``; a consumer
module served by ``tracker serve`` contributes its own as ``ROUTER`` (``extra``).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends

from tracker.web.access import api_viewer
from tracker.web.csrf import same_origin

PREFIX = "/api/v1"


def routers() -> list[APIRouter]:
    """The API's routers; every route of each needs at least a viewer."""
    from tracker.web.api import audit, dead_letters, groups, ids, queues, replays, stuck, tasks

    return [
        queues.router,
        tasks.router,
        groups.router,
        replays.router,
        audit.router,
        ids.router,
        stuck.router,
        dead_letters.router,
    ]


def router(extra: Iterable[APIRouter] = ()) -> APIRouter:
    """The API's routers and ``extra`` under ``/api/v1``, each route behind the same rules:
    cross-site requests refused, a viewer at least (a route that acts asks for more)."""
    api = APIRouter(prefix=PREFIX, dependencies=[Depends(same_origin), Depends(api_viewer)])
    for child in (*routers(), *extra):
        api.include_router(child)
    return api
