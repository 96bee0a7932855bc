"""Connecting the store: a real MongoDB through PyMongo's async client, or the in-memory one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from tracker.constants import DEFAULT_DATABASE
from tracker.errors import NotConnectedError, StoreUnavailableError
from tracker.models import TaskTracker
from tracker.store import inmemory

log = structlog.get_logger("tracker.store")


@dataclass
class _Connection:
    client: Any
    database: str
    in_memory: bool


_connection: _Connection | None = None


async def connect(
    mongodb_url: str | None = None,
    database: str = DEFAULT_DATABASE,
    *,
    server_selection_timeout: float = 5.0,
) -> None:
    """Initialise the store. ``mongodb_url`` ``None`` uses the in-memory MongoDB, which lives
    in this process only. Creates the collection's indexes if they are missing."""
    global _connection
    await disconnect()
    if mongodb_url is None:
        client: Any = inmemory.client()
    else:
        client = AsyncMongoClient(
            mongodb_url,
            tz_aware=True,
            serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
            appname="tracker",
        )
        try:
            await client.admin.command("ping")
        except PyMongoError as exc:
            await client.close()
            raise StoreUnavailableError(
                f"cannot reach MongoDB at {_redact(mongodb_url)}: {exc}"
            ) from exc
    await init_beanie(database=client[database], document_models=[TaskTracker])
    _connection = _Connection(client=client, database=database, in_memory=mongodb_url is None)
    log.debug("store connected", database=database, in_memory=mongodb_url is None)


async def disconnect() -> None:
    global _connection
    if _connection is not None and not _connection.in_memory:
        await _connection.client.close()
    _connection = None


async def ping() -> bool:
    """Whether MongoDB answers (the in-memory one always does)."""
    if _connection is None:
        return False
    if _connection.in_memory:
        return True
    await _connection.client.admin.command("ping")
    return True


def is_connected() -> bool:
    return _connection is not None


def is_in_memory() -> bool:
    return _connection is not None and _connection.in_memory


def collection() -> AsyncCollection[dict[str, Any]]:
    """The ``task_trackers`` collection; raises if ``connect()`` has not run."""
    if _connection is None:
        raise NotConnectedError("the tracker store is not connected: await tracker.connect() first")
    return TaskTracker.get_pymongo_collection()


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
