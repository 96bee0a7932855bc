"""Lists in pages, for every listing of the operations layer: ``Page``, the opaque cursor,
and the one query helper that reads a page in index order.

A page is read in the order of one stored field (a time, or a position), newest first or
oldest first, so the sort is the index's own. The cursor holds the last value of that field
and the ids of the items already returned at that value: the next page is ``field <= value``
(``>=`` when ascending) without those ids, which neither skips nor repeats items that share
a value. A cursor is bound to the query it came from; anything else is a ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, Literal, TypeVar

from bson import ObjectId
from bson.errors import InvalidId

from tracker.clock import as_utc
from tracker.constants import MAX_COUNTED
from tracker.validation import check_count

T = TypeVar("T")
MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
# A cursor is small: a value and the ids sharing it. Anything longer is not one of ours.
MAX_CURSOR_CHARS: Final = 64 * 1024
MAX_CURSOR_IDS: Final = 2 * MAX_LIMIT
# The bounds of a date range when the caller gives none: every stored date is inside, and
# a document without the field (or with a value of another type) is outside.
EARLIEST: Final = datetime(1, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 31, tzinfo=UTC)
MAX_POSITION: Final = 2**62

Kind = Literal["date", "int"]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``next_cursor`` asks for the next one (None: this is the last)."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Order:
    """The stored field a list is read in, its type, and the direction."""

    field: str
    kind: Kind = "date"
    descending: bool = True


async def count(collection: Any, query: Mapping[str, Any]) -> int:
    """How many documents match ``query``, counted up to ``MAX_COUNTED + 1`` (more than
    ``MAX_COUNTED``: a list says "more than" rather than count on)."""
    return int(await collection.count_documents(dict(query), limit=MAX_COUNTED + 1))


def check_limit(limit: object) -> int:
    """``limit`` if it is a page size from 1 to 500."""
    check_count(limit, "limit", MAX_LIMIT)
    if limit == 0:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, not 0")
    return limit  # type: ignore[return-value]


async def fetch(
    collection: Any,
    query: Mapping[str, Any],
    order: Order,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    low: Any = None,
    high: Any = None,
    projection: Mapping[str, Any] | None = None,
) -> Page[dict[str, Any]]:
    """A page of ``collection``'s documents matching ``query``, with ``order.field`` between
    ``low`` and ``high`` (inclusive; None: unbounded), in ``order``, after ``cursor``."""
    limit = check_limit(limit)
    binding = _binding(query, order, low, high)
    low = _bound(order, low, low=True)
    high = _bound(order, high, low=False)
    seen: list[Any] = []
    value: Any = None
    if cursor is not None:
        value, seen = decode(cursor, binding, order.kind)
        if order.descending:
            high = min(high, value)
        else:
            low = max(low, value)
    filter_ = {**query, order.field: {"$gte": low, "$lte": high}}
    if seen:
        filter_["_id"] = {"$nin": seen}
    direction = -1 if order.descending else 1
    found = collection.find(filter_, projection=projection, sort=[(order.field, direction)])
    docs = await found.limit(limit + 1).to_list(limit + 1)
    if len(docs) <= limit:
        return Page(docs, None)
    docs = docs[:limit]
    last = _value(docs[-1][order.field], order.kind)
    tied = [doc["_id"] for doc in docs if _value(doc[order.field], order.kind) == last]
    carried = seen if cursor is not None and last == value else []
    return Page(docs, encode(binding, last, [*carried, *tied], order.kind))


def _bound(order: Order, value: Any, *, low: bool) -> Any:
    if order.kind == "int":
        default = -MAX_POSITION if low else MAX_POSITION
        return default if value is None else value
    return (EARLIEST if low else LATEST) if value is None else as_utc(value)


def _value(value: Any, kind: Kind) -> Any:
    return as_utc(value) if kind == "date" else value


def _binding(query: Mapping[str, Any], order: Order, low: Any, high: Any) -> str:
    """A short digest of the query a cursor belongs to."""
    text = json.dumps([query, order.field, order.descending, low, high], default=repr)
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]


def encode(binding: str, value: Any, ids: list[Any], kind: Kind) -> str:
    """The cursor after an item at ``value`` (ids: those already returned at it)."""
    stored = value.isoformat() if kind == "date" else value
    payload = {"q": binding, "v": stored, "x": [_encode_id(i) for i in ids[-MAX_CURSOR_IDS:]]}
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: object, binding: str, kind: Kind) -> tuple[Any, list[Any]]:
    """The value and ids of ``cursor``; ``ValueError`` (``TypeError`` for a non-string)
    when it is not a cursor of this query."""
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be a string, not {type(cursor).__name__}")
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        raise ValueError("invalid cursor") from None
    if not isinstance(payload, dict) or set(payload) != {"q", "v", "x"}:
        raise ValueError("invalid cursor")
    if payload["q"] != binding:
        raise ValueError("the cursor belongs to another query: start again without it")
    ids = payload["x"]
    if not isinstance(ids, list) or len(ids) > MAX_CURSOR_IDS:
        raise ValueError("invalid cursor")
    return _decode_value(payload["v"], kind), [_decode_id(i) for i in ids]


def _decode_value(value: Any, kind: Kind) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_POSITION:
            raise ValueError("invalid cursor")
        return value
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("invalid cursor")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("invalid cursor") from None
    if parsed.tzinfo is None:
        raise ValueError("invalid cursor")
    return as_utc(parsed)


def _encode_id(value: Any) -> list[Any]:
    if isinstance(value, ObjectId):
        return ["o", str(value)]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, int) and not isinstance(value, bool):
        return ["i", value]
    return ["s", str(value)]


def _decode_id(item: Any) -> Any:
    if not isinstance(item, list) or len(item) != 2 or item[0] not in ("o", "s", "i"):
        raise ValueError("invalid cursor")
    kind, value = item
    if kind == "o":
        try:
            return ObjectId(value) if isinstance(value, str) else _invalid()
        except InvalidId:
            raise ValueError("invalid cursor") from None
    if kind == "s" and isinstance(value, str) and len(value) <= 1024:
        return value
    if kind == "i" and isinstance(value, int) and not isinstance(value, bool):
        return value
    return _invalid()


def _invalid() -> Any:
    raise ValueError("invalid cursor")
