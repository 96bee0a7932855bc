"""A store that answers in constant time and counts its calls, to measure the middleware
rather than the database.

Each execution lives in a one-document mongomock collection found through a dict by
executionId (and activeKey), so every operation runs MongoDB's own semantics (the claim's
pipeline update included) on one document, whatever the number stored. It implements the
operations the consume and enqueue paths issue; anything else fails loudly.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

import mongomock
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


class CountingCollection:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._client: Any = mongomock.MongoClient(tz_aware=True)
        self._names = itertools.count()
        self._by_execution: dict[str, Any] = {}
        self._by_active_key: dict[str, str] = {}
        self._active_of: dict[str, str] = {}
        self.seconds = 0.0  # time spent inside the store, to subtract from the middleware's

    @property
    def round_trips(self) -> int:
        return sum(self.calls.values())

    def _find(self, query: dict[str, Any]) -> Any:
        if "executionId" in query and isinstance(query["executionId"], str):
            return self._by_execution.get(query["executionId"])
        if "activeKey" in query:
            execution_id = self._by_active_key.get(query["activeKey"])
            return self._by_execution.get(execution_id) if execution_id else None
        raise NotImplementedError(f"the counting store does not serve {query!r}")

    def _track_active(self, collection: Any) -> None:
        document = collection.find_one()
        if document is None:
            return
        execution_id = document["executionId"]
        previous = self._active_of.pop(execution_id, None)
        if previous is not None:
            self._by_active_key.pop(previous, None)
        if "activeKey" in document:
            self._by_active_key[document["activeKey"]] = execution_id
            self._active_of[execution_id] = document["activeKey"]

    async def _insert_one(self, document: dict[str, Any], **_: Any) -> Any:
        self.calls["insert_one"] += 1
        if document["executionId"] in self._by_execution or (
            "activeKey" in document and document["activeKey"] in self._by_active_key
        ):
            raise DuplicateKeyError("E11000 duplicate key")
        collection = self._client["bench"][f"e{next(self._names)}"]
        result = collection.insert_one(document)
        self._by_execution[document["executionId"]] = collection
        self._track_active(collection)
        return result

    async def _find_one(self, filter: dict[str, Any] | None = None, *args: Any, **kw: Any) -> Any:
        self.calls["find_one"] += 1
        collection = self._find(filter or {})
        if collection is None:
            return None
        kw.pop("session", None)
        return collection.find_one(filter, *args, **kw)

    async def _find_one_and_update(
        self,
        filter: dict[str, Any],
        update: Any,
        return_document: Any = ReturnDocument.BEFORE,
        **_: Any,
    ) -> Any:
        self.calls["find_one_and_update"] += 1
        collection = self._find(filter)
        if collection is None:
            return None
        result = collection.find_one_and_update(filter, update, return_document=return_document)
        self._track_active(collection)
        return result

    async def _update_one(self, filter: dict[str, Any], update: Any, **_: Any) -> Any:
        self.calls["update_one"] += 1
        collection = self._find(filter)
        if collection is None:
            return mongomock.results.UpdateResult({"n": 0, "nModified": 0}, acknowledged=True)
        result = collection.update_one(filter, update)
        self._track_active(collection)
        return result

    async def _delete_one(self, filter: dict[str, Any], **_: Any) -> Any:
        self.calls["delete_one"] += 1
        collection = self._find(filter)
        if collection is None:
            return mongomock.results.DeleteResult({"n": 0}, acknowledged=True)
        return collection.delete_one(filter)


def _timed(name: str) -> Any:
    async def call(self: CountingCollection, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await getattr(self, f"_{name}")(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    call.__name__ = name
    return call


for _name in ("insert_one", "find_one", "find_one_and_update", "update_one", "delete_one"):
    setattr(CountingCollection, _name, _timed(_name))
