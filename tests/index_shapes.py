"""Checking that queries are index-backed without a server's ``explain``: the queries a run
sends to the in-memory MongoDB are recorded, and each must find an index whose leading
fields it constrains by equality (``$in`` included: the server merges one scan per value),
followed by the field it sorts or ranges on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockCollection
from pymongo import IndexModel

from tests.conftest import in_memory

RANGE = {"$lt", "$lte", "$gt", "$gte"}
METHODS = ("find", "find_one", "find_one_and_update", "update_one", "update_many")
METHODS += ("delete_one", "delete_many", "count_documents", "distinct")


@dataclass(frozen=True)
class Query:
    collection: str
    method: str
    filter: dict[str, Any]
    sort: list[tuple[str, int]]


def served(query: Query, indexes: Sequence[IndexModel]) -> bool:
    """Whether one of ``indexes`` serves ``query`` as described above."""
    if query.method == "distinct":
        field = query.filter.get("_distinct_key")
        return any(next(iter(index.document["key"])) == field for index in indexes)
    filter_ = {k: v for k, v in query.filter.items() if k != "_distinct_key"}
    if "_id" in filter_ and not _residual(filter_["_id"]):
        return True
    equality = {f for f, v in filter_.items() if _equality(v)}
    ranged = {f for f, v in filter_.items() if isinstance(v, dict) and RANGE & v.keys()}
    ordered = [field for field, _ in query.sort]
    for index in indexes:
        keys = list(index.document["key"])
        prefix = 0
        while prefix < len(keys) and keys[prefix] in equality:
            prefix += 1
        rest = keys[prefix:]
        tail = ordered or sorted(ranged)[:1]
        if tail and rest[: len(tail)] != tail:
            continue
        if prefix + len(tail) > 0:
            return True
    return False


def _equality(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"$in"}
    return True


def _residual(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"$nin"}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Query]:
    """Every query sent to the in-memory MongoDB while the test runs."""
    if not in_memory():
        pytest.skip("records queries through the in-memory collection")
    seen: list[Query] = []

    def wrap(name: str) -> None:
        original = getattr(AsyncMongoMockCollection, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if name == "distinct":
                filter_ = {"_distinct_key": args[0], **(args[1] if len(args) > 1 else {})}
            else:
                filter_ = dict((args[0] if args else kwargs.get("filter")) or {})
            sort = list(kwargs.get("sort") or [])
            seen.append(Query(self.name, name, filter_, sort))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(AsyncMongoMockCollection, name, wrapper)

    for name in METHODS:
        wrap(name)
    return seen


def unserved(queries: Sequence[Query], indexes: dict[str, Sequence[IndexModel]]) -> list[Query]:
    """The queries of the collections in ``indexes`` that no index of theirs serves."""
    return [q for q in queries if q.collection in indexes and not served(q, indexes[q.collection])]
