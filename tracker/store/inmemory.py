"""The in-memory MongoDB (mongomock-motor), with the fixes Beanie 2 and this store need.

mongomock-motor 0.0.36 imitates Motor, while Beanie 2 is written against PyMongo's async API.
Each fix below closes one gap, says which, and is applied once per process. The in-memory
server is shared by everything in the process (one per database name) and by nothing outside
it: it is for tests and the single-process demo, never for production.
"""

from __future__ import annotations

from typing import Any

import mongomock
import mongomock.collection
from mongomock_motor import (
    AsyncLatentCommandCursor,
    AsyncMongoMockClient,
    AsyncMongoMockCollection,
    AsyncMongoMockDatabase,
)
from pymongo import IndexModel

_server: Any = None
_patched = False


def client() -> Any:
    """An async client on this process's in-memory server."""
    global _server
    _apply_fixes()
    if _server is None:
        _server = mongomock.MongoClient(tz_aware=True)
    return AsyncMongoMockClient(mock_mongo_client=_server)


def _apply_fixes() -> None:
    global _patched
    if _patched:
        return
    _patched = True

    # Beanie 2's init_beanie calls list_collection_names(authorizedCollections=True,
    # nameOnly=True), options PyMongo passes to the server and mongomock does not know.
    original_list_names = AsyncMongoMockDatabase.list_collection_names

    async def list_collection_names(self: Any, filter: Any = None, **_server_options: Any) -> Any:
        return await original_list_names(self, filter)

    setattr(AsyncMongoMockDatabase, "list_collection_names", list_collection_names)  # noqa: B010

    # PyMongo's async aggregate() is a coroutine that returns a cursor, and Beanie awaits it;
    # mongomock-motor returns the cursor itself. Awaiting the cursor now yields the cursor.
    def _await_cursor(self: Any) -> Any:
        if False:  # pragma: no cover - makes this a generator function
            yield
        return self

    setattr(AsyncLatentCommandCursor, "__await__", _await_cursor)  # noqa: B010

    # mongomock ignores partialFilterExpression, so the activeKey index would count documents
    # without the field as duplicates of each other. For the one filter shape this store uses,
    # {field: {$exists: true}} on the index's own single field, a sparse index is equivalent.
    original_create_indexes = AsyncMongoMockCollection.create_indexes

    async def create_indexes(self: Any, indexes: list[IndexModel], *args: Any, **kw: Any) -> Any:
        return await original_create_indexes(
            self, [_sparse_equivalent(i) for i in indexes], *args, **kw
        )

    setattr(AsyncMongoMockCollection, "create_indexes", create_indexes)  # noqa: B010

    # PyMongo 4.11's UpdateOne passes ``sort`` to the bulk builder, which mongomock's does not
    # take. The tracker never sorts an update: an unsorted one is passed on as before.
    original_add_update: Any = mongomock.collection.BulkOperationBuilder.add_update

    def add_update(self: Any, *args: Any, sort: Any = None, **kw: Any) -> Any:
        if sort is not None:
            raise NotImplementedError("the in-memory MongoDB cannot sort a bulk update")
        return original_add_update(self, *args, **kw)

    setattr(mongomock.collection.BulkOperationBuilder, "add_update", add_update)  # noqa: B010


def _sparse_equivalent(index: IndexModel) -> IndexModel:
    spec = dict(index.document)
    partial = spec.pop("partialFilterExpression", None)
    if partial is None:
        return index
    keys = list(spec.pop("key").items())
    if len(keys) != 1 or partial != {keys[0][0]: {"$exists": True}}:
        raise NotImplementedError(
            f"the in-memory MongoDB cannot emulate partialFilterExpression {partial!r}"
        )
    spec["sparse"] = True
    return IndexModel(keys, **spec)
