"""Connecting the store: a real MongoDB through PyMongo's async client, or the in-memory one.

Every operation on a real server is bounded in time: the client's ``timeoutMS`` (default
10 s, or the URL's own) covers server selection, the wait for a connection, the command and a
majority write concern. Writes use ``w=majority`` unless the URL says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pymongo
import structlog
from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from tracker.clock import utcnow
from tracker.constants import DEFAULT_DATABASE
from tracker.errors import ConfigurationError, NotConnectedError, StoreUnavailableError
from tracker.logging import default_level
from tracker.models import TaskTracker
from tracker.store import clock as server_time
from tracker.store import indexes, inmemory, operator_records
from tracker.store.clock import ServerClock
from tracker.store.errors import describe
from tracker.validation import printable

log = structlog.get_logger("tracker.store")

DEFAULT_TIMEOUT = 10.0


@dataclass
class _Connection:
    client: Any
    database: str
    in_memory: bool
    sharded: bool
    clock: ServerClock
    missing_indexes: list[str] = field(default_factory=list)
    # Whether a service consumes in this process (the in-memory store is then shared).
    consumed_here: bool = False
    warned_private: bool = False


_connection: _Connection | None = None


async def connect(
    mongodb_url: str | None = None,
    database: str = DEFAULT_DATABASE,
    *,
    server_selection_timeout: float = 5.0,
    timeout: float = DEFAULT_TIMEOUT,
    sharded: bool = False,
) -> None:
    """Initialise the store. ``mongodb_url`` ``None`` uses the in-memory MongoDB, which lives
    in this process only (it creates its indexes itself). A real server is asked whether the
    indexes the guarantees rest on exist; consumers and publishers refuse to start without
    them (``tracker migrate`` creates them). ``timeout``: the bound on every operation, unless
    the URL sets ``timeoutMS``; ``sharded``: the collection is sharded on ``{taskId: 1}``
    (the sharded index set)."""
    global _connection
    default_level()
    await disconnect()
    if mongodb_url is None and sharded:
        raise ConfigurationError("the in-memory MongoDB cannot hold the sharded index set")
    if mongodb_url is None:
        client: Any = inmemory.client()
    else:
        client = _client(mongodb_url, server_selection_timeout, timeout)
    clock = ServerClock(in_memory=mongodb_url is None)
    try:
        if mongodb_url is not None:
            # The first contact is bounded by server selection alone, so an unreachable
            # server is reported within that bound (timeoutMS would otherwise govern it).
            with pymongo.timeout(_selection_bound(mongodb_url, server_selection_timeout)):
                await _observe_clock(client, clock)
        await init_beanie(
            database=client[database], document_models=[TaskTracker], skip_indexes=True
        )
        state = _Connection(client, database, mongodb_url is None, sharded, clock)
        _connection = state
        server_time.use(clock)
        if state.in_memory:
            await ensure_indexes()
        else:
            existing = await collection().index_information()
            state.missing_indexes = indexes.missing_required(existing, sharded)
    except PyMongoError as exc:
        _connection = None
        if mongodb_url is not None:
            await client.close()
        if mongodb_url is None:
            raise StoreUnavailableError(f"the in-memory MongoDB failed: {describe(exc)}") from exc
        bound = _selection_bound(mongodb_url, server_selection_timeout)
        raise StoreUnavailableError(
            f"cannot reach MongoDB at {redact(mongodb_url)} within {bound:g} s "
            f"({_reason(exc)}): check TRACKER_MONGODB_URL and that the server is up"
        ) from exc
    log.debug("store connected", database=database, in_memory=mongodb_url is None)


def _selection_bound(url: str, default: float) -> float:
    """Seconds to find a server: the URL's ``serverSelectionTimeoutMS``, else ``default``."""
    given = {name.lower(): value for name, value in parse_qsl(urlsplit(url).query)}
    try:
        return int(given["serverselectiontimeoutms"]) / 1000
    except (KeyError, ValueError):
        return default


def _reason(error: PyMongoError) -> str:
    """Why the server could not be reached, without the driver's topology description."""
    text = str(error).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return printable(text.splitlines()[0] if text else type(error).__name__, 200)


def _client(url: str, server_selection_timeout: float, timeout: float) -> Any:
    """The client, with the tracker's bounds where the URL sets none of its own."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
    options: dict[str, Any] = {
        "tz_aware": True,
        "appname": "tracker",
        "serverSelectionTimeoutMS": round(_selection_bound(url, server_selection_timeout) * 1000),
    }
    if "timeoutms" not in given:
        options["timeoutMS"] = round(timeout * 1000)
    if "w" not in given:
        options["w"] = "majority"
    return AsyncMongoClient(url, **options)


async def _observe_clock(client: Any, clock: ServerClock) -> None:
    sent = utcnow()
    hello = await client.admin.command("hello")
    if "localTime" in hello:
        clock.observe(hello["localTime"], sent, utcnow())


async def refresh_clock() -> None:
    """Measure the offset to the server's clock again (the sweeper does, now and then)."""
    state = _require()
    if not state.in_memory:
        await _observe_clock(state.client, state.clock)


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


def mark_consumed_here() -> None:
    """A service consumes in this process: what is enqueued here, it runs and records."""
    _require().consumed_here = True


def warn_if_private() -> None:
    """Once per connection, loudly: enqueueing on the in-memory store of a process where no
    service consumes. That store is this process's alone, so a ``tracker serve`` elsewhere
    neither sees these executions nor deduplicates against them."""
    state = _connection
    if state is None or not state.in_memory or state.consumed_here or state.warned_private:
        return
    state.warned_private = True
    log.warning(
        "enqueueing on this process's own in-memory store: a service in another process does "
        "not see these executions, and deduplication does not span processes; set "
        "TRACKER_MONGODB_URL to share one MongoDB, or submit to the service with "
        "POST /api/v1/tasks"
    )


def is_sharded() -> bool:
    return _require().sharded


def server_clock() -> ServerClock:
    return _require().clock


def collection() -> AsyncCollection[dict[str, Any]]:
    """The ``task_trackers`` collection; raises if ``connect()`` has not run."""
    _require()
    return TaskTracker.get_pymongo_collection()


def database() -> Any:
    """The database the store uses (for the tracker's other collections)."""
    state = _require()
    return state.client[state.database]


def require_indexes() -> None:
    """Refuse to go on when an index the guarantees rest on is missing."""
    missing = _require().missing_indexes
    if missing:
        raise ConfigurationError(
            f"MongoDB lacks the indexes the tracker's guarantees rest on ({', '.join(missing)}): "
            "run `tracker migrate` (it creates them; `tracker serve` does it at start)"
        )


async def ensure_indexes(
    search_keys: Sequence[str] = (), audit_retention: float | None = None
) -> indexes.IndexPlan:
    """Bring the collection's indexes to the set this connection uses, and create those of
    the operations collections and of ``search_keys`` (``operator_records.ensure``); what was
    done."""
    state = _require()
    existing = await collection().index_information()
    if state.in_memory:
        # mongomock keeps a partial index as its sparse equivalent: compare by name only.
        wanted = indexes.index_set(state.sharded)
        steps = indexes.IndexPlan(
            create=[i.document["name"] for i in wanted if i.document["name"] not in existing]
        )
    else:
        steps = indexes.plan(existing, state.sharded)
    await indexes.apply(collection(), steps, state.sharded)
    state.missing_indexes = []
    steps.create += await operator_records.ensure(
        database(),
        collection(),
        search_keys=search_keys,
        audit_retention=audit_retention,
        in_memory=state.in_memory,
    )
    return steps


def _require() -> _Connection:
    if _connection is None:
        raise NotConnectedError("the tracker store is not connected: await tracker.connect() first")
    return _connection


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
