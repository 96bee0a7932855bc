"""The MongoDB stand-in, driven by the real PyMongo async client as the tracker drives it."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import AsyncMongoClient, DeleteOne, IndexModel, InsertOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from tests.mongo_standin import StandIn, StandInServer
from tests.mongo_standin.matching import compile_filter

Client = AsyncMongoClient[dict[str, Any]]
Collection = AsyncCollection[dict[str, Any]]

try:
    import hypothesis
    from hypothesis import strategies as st
except ModuleNotFoundError:  # hypothesis is a dev dependency; the property test needs it
    hypothesis = None  # type: ignore[assignment]


@pytest.fixture
async def standin() -> AsyncIterator[StandInServer]:
    async with StandInServer() as server:
        yield server


@pytest.fixture
async def client(standin: StandInServer) -> AsyncIterator[Client]:
    mongo: Client = AsyncMongoClient(standin.url, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
def things(client: Client) -> Collection:
    return client.standin_test.things


async def stats(client: Client) -> dict[str, int]:
    reply = await client.admin.command("standinStats")
    return dict(reply["commands"])


def now() -> dt.datetime:
    moment = dt.datetime.now(dt.UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# -------------------------------------------------------------------------------------------
# Handshake and reads


async def test_the_client_connects_and_pings(client: Client) -> None:
    # Given a fresh client
    # When it pings and reads the server's description
    ping = await client.admin.command("ping")
    info = await client.server_info()
    hello = await client.admin.command("hello")
    # Then it sees a modern, writable primary that supports sessions
    assert ping["ok"] == 1.0
    assert info["version"].startswith("7.")
    assert hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] >= 17
    assert hello["logicalSessionTimeoutMinutes"] > 0
    assert {"ismaster", "hello", "ping", "buildinfo"} <= (await stats(client)).keys()


async def test_an_unknown_command_fails_as_on_a_server(client: Client) -> None:
    # Given / When a command MongoDB does not have
    with pytest.raises(OperationFailure) as failure:
        await client.admin.command("noSuchThing")
    # Then
    assert failure.value.code == 59
    assert failure.value.details is not None
    assert failure.value.details["codeName"] == "CommandNotFound"
    assert failure.value.details["errmsg"] == "no such command: 'noSuchThing'"


async def test_find_filters_sorts_limits_and_projects(things: Collection) -> None:
    # Given
    await things.insert_many(
        [{"n": n, "parity": n % 2, "tags": ["all", f"t{n}"], "nested": {"k": n}} for n in range(10)]
    )
    # When
    found = await things.find(
        {"parity": 1, "nested.k": {"$gte": 3}, "tags": "all"},
        projection={"_id": 0, "n": 1, "nested.k": 1},
        sort=[("n", -1)],
        limit=3,
    ).to_list()
    # Then
    assert found == [
        {"n": 9, "nested": {"k": 9}},
        {"n": 7, "nested": {"k": 7}},
        {"n": 5, "nested": {"k": 5}},
    ]


async def test_find_skips_and_excludes_fields(things: Collection) -> None:
    # Given
    await things.insert_many([{"n": n, "secret": "x"} for n in range(5)])
    # When
    found = await things.find({}, {"secret": 0, "_id": False}).sort("n", 1).skip(3).to_list()
    only_id = await things.find_one({"n": 1}, {"_id": 1})
    # Then
    assert found == [{"n": 3}, {"n": 4}]
    assert only_id is not None
    assert list(only_id) == ["_id"]


async def test_get_more_returns_the_rest_in_batches(client: Client, things: Collection) -> None:
    # Given 25 documents
    await things.insert_many([{"n": n} for n in range(25)])
    await client.admin.command("standinReset")
    # When they are read 10 at a time
    found = [doc["n"] async for doc in things.find().batch_size(10)]
    # Then all arrive in order, over one find and two getMores
    assert found == list(range(25))
    counts = await stats(client)
    assert (counts["find"], counts["getMore"]) == (1, 2)


async def test_mixed_types_sort_in_mongodb_order(things: Collection) -> None:
    # Given one value of each type
    oid = ObjectId()
    moment = now()
    values: list[Any] = [moment, True, oid, [1], {"a": 1}, "s", 2.5, 1, None]
    await things.insert_many([{"i": index, "v": value} for index, value in enumerate(values)])
    await things.insert_one({"i": 99})
    # When sorted ascending
    found = [doc.get("v") for doc in await things.find().sort([("v", 1), ("i", 1)]).to_list()]
    # Then missing and null come first, then numbers (the array [1] sorts by its least
    # element, tying with 1), strings, objects, ObjectId, booleans and dates
    assert found == [None, None, [1], 1, 2.5, "s", {"a": 1}, oid, True, moment]


async def test_an_expr_filter_compares_a_stored_date_with_the_servers_now(
    things: Collection,
) -> None:
    # Given one lease that has expired and one that has not
    await things.insert_many(
        [
            {"_id": "expired", "leaseExpiresAt": now() - dt.timedelta(minutes=1)},
            {"_id": "held", "leaseExpiresAt": now() + dt.timedelta(minutes=1)},
            {"_id": "none"},
        ]
    )
    # When
    found = await things.find(
        {"$expr": {"$lte": [{"$ifNull": ["$leaseExpiresAt", "$$NOW"]}, "$$NOW"]}}
    ).to_list()
    # Then
    assert sorted(doc["_id"] for doc in found) == ["expired", "none"]


async def test_query_operators(things: Collection) -> None:
    # Given
    await things.insert_many(
        [
            {"_id": 1, "a": 5, "s": "apple", "arr": [1, 2, 3], "sub": [{"x": 1, "y": "a"}]},
            {"_id": 2, "a": "5", "s": "Banana", "arr": [], "sub": [{"x": 2, "y": "b"}]},
            {"_id": 3, "a": None, "arr": [4], "sub": []},
            {"_id": 4, "s": "cherry"},
        ]
    )

    async def ids(query: dict[str, Any]) -> list[int]:
        return sorted(doc["_id"] for doc in await things.find(query).to_list())

    # When / Then
    assert await ids({"a": None}) == [3, 4]
    assert await ids({"a": {"$exists": True}}) == [1, 2, 3]
    assert await ids({"a": {"$gt": 1}}) == [1]
    assert await ids({"a": {"$type": "string"}}) == [2]
    assert await ids({"a": {"$ne": 5}}) == [2, 3, 4]
    assert await ids({"a": {"$nin": [5, None]}}) == [2]
    assert await ids({"s": {"$regex": "^b", "$options": "i"}}) == [2]
    assert await ids({"s": {"$not": {"$regex": "an"}}}) == [1, 3, 4]
    assert await ids({"arr": 2}) == [1]
    assert await ids({"arr": {"$size": 0}}) == [2]
    assert await ids({"arr": {"$all": [1, 3]}}) == [1]
    assert await ids({"arr": {"$elemMatch": {"$gt": 3}}}) == [3]
    assert await ids({"sub": {"$elemMatch": {"x": 2, "y": "b"}}}) == [2]
    assert await ids({"sub.x": 1}) == [1]
    assert await ids({"$or": [{"a": 5}, {"s": "cherry"}]}) == [1, 4]
    assert await ids({"$nor": [{"a": 5}, {"s": "cherry"}]}) == [2, 3]
    assert await ids({"$and": [{"a": {"$exists": True}}, {"arr": {"$in": [4, 3]}}]}) == [1, 3]


# -------------------------------------------------------------------------------------------
# Writes


async def test_update_operators(things: Collection) -> None:
    # Given
    await things.insert_one(
        {"_id": 1, "n": 1, "gone": True, "old": "name", "tags": ["a", "b", "a"], "low": 5}
    )
    # When
    result = await things.update_one(
        {"_id": 1},
        {
            "$set": {"deep.field": "x"},
            "$inc": {"n": 2, "fresh": Int64(1)},
            "$unset": {"gone": ""},
            "$rename": {"old": "new"},
            "$push": {"history": {"$each": [1, 2, 3], "$slice": -2}},
            "$pull": {"tags": "a"},
            "$addToSet": {"set": {"$each": [1, 1, 2]}},
            "$min": {"low": 3},
            "$max": {"high": 7},
            "$currentDate": {"touched": True},
            "$setOnInsert": {"never": True},
        },
    )
    doc = await things.find_one({"_id": 1})
    # Then
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert doc is not None
    touched = doc.pop("touched")
    assert doc == {
        "_id": 1,
        "n": 3,
        "new": "name",
        "tags": ["b"],
        "low": 3,
        "deep": {"field": "x"},
        "fresh": 1,
        "history": [2, 3],
        "set": [1, 2],
        "high": 7,
    }
    assert abs(touched - now()) < dt.timedelta(seconds=5)


async def test_an_upsert_builds_from_the_filter_and_set_on_insert(things: Collection) -> None:
    # Given an empty collection
    # When
    result = await things.update_one(
        {"key": "k", "n": {"$gt": 1}},
        {"$set": {"v": 1}, "$setOnInsert": {"created": True}},
        upsert=True,
    )
    again = await things.update_one(
        {"key": "k"}, {"$set": {"v": 2}, "$setOnInsert": {"created": False}}, upsert=True
    )
    # Then
    doc = await things.find_one({}, {"_id": 0})
    assert isinstance(result.upserted_id, ObjectId)
    assert again.upserted_id is None
    assert again.matched_count == 1
    assert doc == {"key": "k", "v": 2, "created": True}


async def test_conflicting_update_operators_are_refused(things: Collection) -> None:
    # Given
    await things.insert_one({"_id": 1, "a": {"b": 1}})
    # When / Then
    with pytest.raises(OperationFailure) as failure:
        await things.update_one({"_id": 1}, {"$set": {"a.b": 2}, "$unset": {"a": ""}})
    assert failure.value.code == 40


async def test_a_pipeline_update_uses_the_servers_now_cond_and_if_null(
    things: Collection,
) -> None:
    # Given one queued execution and one held under a live lease
    await things.insert_many(
        [
            {"_id": "queued", "status": "queued"},
            {
                "_id": "held",
                "status": "processing",
                "leaseExpiresAt": now() + dt.timedelta(hours=1),
            },
        ]
    )
    claimable = {
        "$or": [
            {"$eq": ["$status", "queued"]},
            {"$lte": [{"$ifNull": ["$leaseExpiresAt", "$$NOW"]}, "$$NOW"]},
        ]
    }
    pipeline: list[dict[str, Any]] = [
        {"$set": {"_claimable": claimable}},
        {
            "$set": {
                "status": {"$cond": ["$_claimable", "processing", "$status"]},
                "leaseExpiresAt": {
                    "$cond": {
                        "if": "$_claimable",
                        "then": {
                            "$dateAdd": {"startDate": "$$NOW", "unit": "second", "amount": 30}
                        },
                        "else": "$leaseExpiresAt",
                    }
                },
                "history": {
                    "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, ["claimed"]]}, -5]
                },
            }
        },
        {"$project": {"_claimable": 0}},
    ]
    before = now()
    # When
    result = await things.update_many({}, pipeline)
    # Then the queued one is claimed with a lease computed from the server's clock
    queued = await things.find_one({"_id": "queued"})
    held = await things.find_one({"_id": "held"})
    assert result.modified_count == 2
    assert queued is not None
    assert held is not None
    assert queued["status"] == "processing"
    assert "_claimable" not in queued
    lease = queued["leaseExpiresAt"] - before
    assert dt.timedelta(seconds=29) < lease < dt.timedelta(seconds=35)
    assert held["leaseExpiresAt"] - before > dt.timedelta(minutes=59)
    assert queued["history"] == held["history"] == ["claimed"]


async def test_find_one_and_update_returns_the_projected_document_after(
    things: Collection,
) -> None:
    # Given
    await things.insert_many([{"k": "a", "n": 1, "big": "x" * 10}, {"k": "a", "n": 5}])
    # When the highest n is incremented
    after = await things.find_one_and_update(
        {"k": "a"},
        {"$inc": {"n": 10}},
        sort=[("n", -1)],
        projection={"n": 1, "_id": 0},
        return_document=ReturnDocument.AFTER,
    )
    before = await things.find_one_and_update({"k": "a", "n": 1}, {"$set": {"n": 2}})
    missing = await things.find_one_and_update({"k": "zzz"}, {"$set": {"n": 0}})
    created = await things.find_one_and_update(
        {"k": "new"}, [{"$set": {"n": 1}}], upsert=True, return_document=ReturnDocument.AFTER
    )
    removed = await things.find_one_and_delete({"k": "new"})
    # Then
    assert after == {"n": 15}
    assert before is not None
    assert before["n"] == 1
    assert missing is None
    assert created is not None
    assert created["k"] == "new"
    assert created["n"] == 1
    assert removed == created
    assert await things.count_documents({}) == 2


async def test_inserting_without_an_id_gets_an_object_id(client: Client) -> None:
    # Given / When a raw insert command with no _id
    reply = await client.standin_test.command("insert", "raw", documents=[{"a": 1}])
    doc = await client.standin_test.raw.find_one()
    # Then
    assert reply["n"] == 1
    assert doc is not None
    assert isinstance(doc["_id"], ObjectId)


async def test_deletes_and_datetime_precision(things: Collection) -> None:
    # Given a datetime with microseconds
    precise = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    await things.insert_many([{"k": 1, "at": precise}, {"k": 1}, {"k": 2}])
    # When
    one = await things.delete_one({"k": 1})
    many = await things.delete_many({"k": {"$in": [1, 2]}})
    await things.insert_one({"at": precise})
    stored = await things.find_one({"at": {"$type": "date"}})
    # Then datetimes come back as BSON dates: UTC, millisecond precision
    assert (one.deleted_count, many.deleted_count) == (1, 2)
    assert stored is not None
    assert stored["at"] == precise.replace(microsecond=123000)


# -------------------------------------------------------------------------------------------
# Aggregation


async def test_count_documents_and_distinct(things: Collection) -> None:
    # Given
    await things.insert_many(
        [{"q": "a", "s": "queued"}, {"q": "a", "s": "done"}, {"q": "b", "s": ["x", "y"]}]
    )
    # When / Then
    assert await things.count_documents({"q": "a"}) == 2
    assert await things.count_documents({"q": "zzz"}) == 0
    assert await things.count_documents({}, skip=1, limit=1) == 1
    assert await things.estimated_document_count() == 3
    assert sorted(await things.distinct("s")) == ["done", "queued", "x", "y"]
    assert await things.distinct("q", {"s": "done"}) == ["a"]


async def test_aggregate_stages(things: Collection) -> None:
    # Given
    await things.insert_many(
        [{"q": "a", "n": 1}, {"q": "a", "n": 2}, {"q": "b", "n": 5}, {"q": "c", "n": 0}]
    )
    # When
    grouped = await (
        await things.aggregate(
            [
                {"$match": {"n": {"$gt": 0}}},
                {
                    "$group": {
                        "_id": "$q",
                        "total": {"$sum": "$n"},
                        "count": {"$sum": 1},
                        "ns": {"$push": "$n"},
                        "top": {"$max": "$n"},
                    }
                },
                {"$addFields": {"double": {"$multiply": ["$total", 2]}}},
                {"$sort": {"total": -1}},
                {"$skip": 0},
                {"$limit": 5},
                {
                    "$project": {
                        "_id": 0,
                        "q": "$_id",
                        "total": 1,
                        "count": 1,
                        "ns": 1,
                        "top": 1,
                        "double": 1,
                    }
                },
            ]
        )
    ).to_list()
    counted = await (await things.aggregate([{"$match": {"q": "a"}}, {"$count": "n"}])).to_list()
    # Then
    assert grouped == [
        {"total": 5, "count": 1, "ns": [5], "top": 5, "double": 10, "q": "b"},
        {"total": 3, "count": 2, "ns": [1, 2], "top": 2, "double": 6, "q": "a"},
    ]
    assert counted == [{"n": 2}]


async def test_aggregation_expressions(things: Collection) -> None:
    # Given
    await things.insert_one({"_id": 1, "n": 7, "list": [1, 2, 3], "doc": {"a": 1}})
    start = dt.datetime(2024, 1, 31, tzinfo=dt.UTC)
    # When
    projected = await (
        await things.aggregate(
            [
                {
                    "$project": {
                        "type": {"$type": "$n"},
                        "missing": {"$type": "$nothing"},
                        "size": {"$size": "$list"},
                        "last": {"$arrayElemAt": ["$list", -1]},
                        "window": {"$slice": ["$list", 1, 5]},
                        "merged": {"$mergeObjects": ["$doc", {"b": 2}, None]},
                        "found": {"$in": [2, "$list"]},
                        "literal": {"$literal": "$n"},
                        "month": {"$dateAdd": {"startDate": start, "unit": "month", "amount": 1}},
                        "parsed": {"$toDate": "2024-01-31T00:00:00Z"},
                        "size_class": {
                            "$switch": {
                                "branches": [{"case": {"$gt": ["$n", 5]}, "then": "big"}],
                                "default": "small",
                            }
                        },
                        "sum": {"$add": ["$n", 1, 0.5]},
                        "product": {"$multiply": ["$n", 2]},
                        "difference": {"$subtract": ["$n", 10]},
                        "ratio": {"$divide": ["$n", 2]},
                        "largest": {"$max": ["$n", 100, None]},
                        "smallest": {"$min": "$list"},
                        "either": {"$or": [False, {"$and": [True, "$n"]}]},
                        "negated": {"$not": [{"$ne": ["$n", 7]}]},
                        "fallback": {"$ifNull": ["$nothing", None, "default"]},
                        "chosen": {
                            "$cond": {"if": {"$gte": ["$n", 7]}, "then": "yes", "else": "no"}
                        },
                    }
                }
            ]
        )
    ).to_list()
    # Then
    assert projected == [
        {
            "_id": 1,
            "type": "int",
            "missing": "missing",
            "size": 3,
            "last": 3,
            "window": [2, 3],
            "merged": {"a": 1, "b": 2},
            "found": True,
            "literal": "$n",
            "month": dt.datetime(2024, 2, 29, tzinfo=dt.UTC),
            "parsed": start,
            "size_class": "big",
            "sum": 8.5,
            "product": 14,
            "difference": -3,
            "ratio": 3.5,
            "largest": 100,
            "smallest": 1,
            "either": True,
            "negated": True,
            "fallback": "default",
            "chosen": "yes",
        }
    ]


async def test_pipeline_updates_unset_replace_and_project(things: Collection) -> None:
    # Given
    await things.insert_many([{"_id": 1, "a": 1, "b": 2, "c": 3}, {"_id": 2, "a": 1, "b": 2}])
    # When
    await things.update_one({"_id": 1}, [{"$unset": ["b", "c"]}])
    await things.update_one(
        {"_id": 2},
        [{"$replaceWith": {"$mergeObjects": ["$$ROOT", {"z": "$a"}]}}, {"$project": {"z": 1}}],
    )
    # Then
    assert await things.find().sort("_id", 1).to_list() == [{"_id": 1, "a": 1}, {"_id": 2, "z": 1}]


# -------------------------------------------------------------------------------------------
# Indexes


async def test_a_unique_index_refuses_a_duplicate_insert(things: Collection) -> None:
    # Given
    await things.create_index("executionId", unique=True, name="executionId_1")
    await things.insert_one({"executionId": "e1"})
    # When / Then
    with pytest.raises(DuplicateKeyError) as failure:
        await things.insert_one({"executionId": "e1"})
    assert failure.value.code == 11000
    assert failure.value.details is not None
    assert failure.value.details["keyPattern"] == {"executionId": 1}
    assert failure.value.details["keyValue"] == {"executionId": "e1"}
    assert failure.value.details["errmsg"] == (
        "E11000 duplicate key error collection: standin_test.things index: executionId_1 "
        'dup key: { executionId: "e1" }'
    )
    assert await things.count_documents({}) == 1


async def test_a_partial_unique_index_covers_only_documents_with_the_field(
    things: Collection,
) -> None:
    # Given the tracker's one-active-execution index
    await things.create_indexes(
        [
            IndexModel(
                [("activeKey", 1)],
                name="activeKey_1",
                unique=True,
                partialFilterExpression={"activeKey": {"$exists": True}},
            )
        ]
    )
    # When documents without the field are stored, and two with the same value
    await things.insert_many([{"n": 1}, {"n": 2}, {"n": 3, "activeKey": "task-1"}])
    with pytest.raises(DuplicateKeyError) as failure:
        await things.insert_one({"n": 4, "activeKey": "task-1"})
    # Then only the second holder of the value is refused, until the first gives it up
    assert failure.value.details is not None
    assert failure.value.details["keyValue"] == {"activeKey": "task-1"}
    await things.update_one({"n": 3}, {"$unset": {"activeKey": ""}})
    await things.insert_one({"n": 4, "activeKey": "task-1"})
    assert await things.count_documents({"activeKey": "task-1"}) == 1


async def test_updates_that_would_duplicate_a_compound_key_are_refused(
    things: Collection,
) -> None:
    # Given
    await things.create_index([("taskId", 1), ("executionId", 1)], unique=True)
    await things.insert_many(
        [{"taskId": "t", "executionId": "e1"}, {"taskId": "t", "executionId": "e2"}]
    )
    # When / Then
    with pytest.raises(DuplicateKeyError):
        await things.update_one({"executionId": "e2"}, {"$set": {"executionId": "e1"}})
    with pytest.raises(DuplicateKeyError):
        await things.find_one_and_update({"executionId": "e2"}, {"$set": {"executionId": "e1"}})
    assert await things.count_documents({"executionId": "e2"}) == 1
    indexes = await things.index_information()
    assert indexes["taskId_1_executionId_1"]["unique"] is True


async def test_an_unordered_bulk_write_applies_all_but_the_failing_operation(
    things: Collection,
) -> None:
    # Given
    await things.create_index("k", unique=True)
    await things.insert_one({"k": 1})
    # When
    with pytest.raises(BulkWriteError) as failure:
        await things.bulk_write(
            [
                InsertOne({"k": 2}),
                InsertOne({"k": 1}),
                UpdateOne({"k": 2}, {"$set": {"v": "updated"}}),
                InsertOne({"k": 3}),
                DeleteOne({"k": 3}),
            ],
            ordered=False,
        )
    # Then the error names the failing operation and the others were applied
    errors = failure.value.details["writeErrors"]
    assert [(error["index"], error["code"]) for error in errors] == [(1, 11000)]
    assert failure.value.details["nInserted"] == 2
    assert await things.find_one({"k": 2}, {"_id": 0}) == {"k": 2, "v": "updated"}
    assert await things.count_documents({}) == 2


async def test_an_ordered_bulk_write_stops_at_the_first_error(things: Collection) -> None:
    # Given
    await things.create_index("k", unique=True)
    # When
    with pytest.raises(BulkWriteError) as failure:
        await things.bulk_write([InsertOne({"k": 1}), InsertOne({"k": 1}), InsertOne({"k": 2})])
    # Then
    assert failure.value.details["nInserted"] == 1
    assert await things.count_documents({}) == 1


async def test_databases_and_indexes_can_be_listed_and_dropped(client: Client) -> None:
    # Given
    await client.first.items.create_index("a")
    await client.second.items.insert_one({"a": 1})
    # When
    await client.first.items.drop_index("a_1")
    first_indexes = [index["name"] async for index in await client.first.items.list_indexes()]
    await client.drop_database("second")
    # Then
    assert first_indexes == ["_id_"]
    assert await client.list_database_names() == ["first"]
    assert await client.second.items.count_documents({}) == 0


# -------------------------------------------------------------------------------------------
# Fault injection


async def test_a_retryable_error_is_retried_by_the_client(
    client: Client, things: Collection
) -> None:
    # Given the next insert fails as if the server were shutting down
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["insert"], "errorCode": 91, "errorLabels": ["RetryableWriteError"]},
    )
    await client.admin.command("standinReset")
    # When
    await things.insert_one({"_id": "once"})
    # Then the client retried it, and the document is stored once
    assert (await stats(client))["insert"] == 2
    assert await things.count_documents({}) == 1


async def test_a_write_concern_error_reaches_the_caller(client: Client, things: Collection) -> None:
    # Given
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={
            "failCommands": ["insert"],
            "writeConcernError": {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": "waiting for replication timed out",
                "errInfo": {"wtimeout": True},
            },
        },
    )
    majority = things.with_options(
        write_concern=things.write_concern.__class__(w="majority", wtimeout=100)
    )
    # When / Then
    with pytest.raises(WriteConcernError) as failure:
        await majority.insert_one({"_id": 1})
    assert failure.value.code == 64
    assert await things.count_documents({}) == 1  # the write itself was applied


async def test_a_write_applied_before_a_retryable_write_concern_error_is_not_repeated(
    client: Client, things: Collection
) -> None:
    # Given the next insert is applied but answered with a retryable write concern error
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["insert"], "writeConcernError": {"code": 91, "errmsg": "down"}},
    )
    await client.admin.command("standinReset")
    # When the client retries it with the same transaction number
    await things.insert_one({"_id": "once"})
    # Then the server answers the retry with the first result instead of a duplicate key
    assert (await stats(client))["insert"] == 2
    assert await things.count_documents({}) == 1


async def test_a_fail_point_can_be_limited_to_an_application(
    standin: StandInServer, client: Client, things: Collection
) -> None:
    # Given a fail point for another application's finds
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={"failCommands": ["find"], "errorCode": 2, "appName": "other"},
    )
    other: Client = AsyncMongoClient(standin.url, appname="other")
    try:
        # When / Then
        assert await things.find_one() is None
        with pytest.raises(OperationFailure) as failure:
            await other.standin_test.things.find_one()
        assert failure.value.code == 2
    finally:
        await other.close()
        await client.admin.command("configureFailPoint", "failCommand", mode="off")


async def test_a_closed_connection_is_a_network_error(client: Client, things: Collection) -> None:
    # Given
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 2},
        data={"failCommands": ["find"], "closeConnection": True},
    )
    # When / Then (the client's one retry of the read fails too)
    with pytest.raises(ConnectionFailure):
        await things.find_one()


async def test_a_blocked_command_times_out_on_the_client(standin: StandInServer) -> None:
    # Given a server that holds every update for a minute, and a client with a 500 ms budget
    patient: Client = AsyncMongoClient(standin.url, timeoutMS=500)
    try:
        await patient.admin.command(
            "configureFailPoint",
            "failCommand",
            mode="alwaysOn",
            data={"failCommands": ["update"], "blockConnection": True, "blockTimeMS": 60_000},
        )
        started = time.monotonic()
        # When
        with pytest.raises(PyMongoError) as failure:
            await patient.standin_test.things.update_one({"_id": 1}, {"$set": {"a": 1}})
        # Then
        assert time.monotonic() - started < 5
        assert failure.value.timeout
        await patient.admin.command("configureFailPoint", "failCommand", mode="off")
        assert await patient.standin_test.things.find_one() is None
    finally:
        await patient.close()


async def test_a_silent_server_makes_the_client_time_out(standin: StandInServer) -> None:
    # Given a connected client, then a server that stops answering
    patient: Client = AsyncMongoClient(standin.url, timeoutMS=500)
    try:
        await patient.admin.command("ping")
        await patient.admin.command("standinSilence", on=True)
        started = time.monotonic()
        # When
        with pytest.raises(PyMongoError) as failure:
            await patient.standin_test.things.find_one()
        # Then
        assert time.monotonic() - started < 5
        assert failure.value.timeout
    finally:
        await patient.admin.command("standinSilence", on=False)
        await patient.close()
    assert standin.stats["find"] >= 1


# -------------------------------------------------------------------------------------------
# Its own process, and constant time per operation

TRACKER_INDEXES = [
    IndexModel([("taskId", 1), ("executionId", 1)], unique=True),
    IndexModel([("taskId", 1), ("status", 1), ("enqueuedAt", -1)]),
    IndexModel([("queueName", 1), ("status", 1), ("enqueuedAt", -1)]),
    IndexModel([("status", 1), ("processingStartedAt", 1)]),
    IndexModel([("executionId", 1)], unique=True),
    IndexModel(
        [("activeKey", 1)], unique=True, partialFilterExpression={"activeKey": {"$exists": True}}
    ),
    IndexModel([("expiresAt", 1)], expireAfterSeconds=0),
]


def execution(number: int) -> dict[str, Any]:
    at = now()
    return {
        "taskId": f"task-{number}",
        "executionId": f"exec-{number}",
        "queueName": "bench",
        "status": "queued",
        "activeKey": f"task-{number}",
        "enqueuedAt": at,
        "updatedAt": at,
        "retryCount": 0,
        "payload": {"number": number, "text": "x" * 100},
        "history": [{"status": "queued", "at": at}],
    }


async def fill(collection: Collection, count: int) -> None:
    await collection.create_indexes(TRACKER_INDEXES)
    for start in range(0, count, 2000):
        await collection.insert_many([execution(n) for n in range(start, min(start + 2000, count))])


async def median_update_seconds(collection: Collection, count: int, rounds: int = 200) -> float:
    timings = []
    for round_number in range(rounds):
        number = (round_number * 7919) % count
        status = ("queued", "processing")[round_number % 2]
        started = time.perf_counter()
        result = await collection.update_one(
            {"executionId": f"exec-{number}", "status": {"$in": ["queued", "processing"]}},
            {
                "$set": {"status": status, "updatedAt": now()},
                "$push": {"history": {"$each": [{"status": status}], "$slice": -20}},
            },
        )
        timings.append(time.perf_counter() - started)
        assert result.matched_count == 1
    return statistics.median(timings)


async def test_an_indexed_update_costs_the_same_with_20000_documents() -> None:
    # Given the stand-in in its own process, holding 10 executions in one collection and
    # 20,000 in another, both with the tracker's indexes
    async with StandIn() as standin:
        mongo: Client = AsyncMongoClient(standin.url, tz_aware=True)
        try:
            small, large = mongo.bench.small, mongo.bench.large
            await fill(small, 10)
            await fill(large, 20_000)
            await median_update_seconds(small, 10, rounds=20)  # warm up
            # When each gets the same update by executionId
            small_seconds = await median_update_seconds(small, 10)
            large_seconds = await median_update_seconds(large, 20_000)
            # Then the larger collection costs about the same per operation
            assert await large.count_documents({}) == 20_000
            assert large_seconds < 5 * small_seconds, (small_seconds, large_seconds)
        finally:
            await mongo.close()


def test_the_process_announces_its_port_and_stops() -> None:
    # Given / When
    with StandIn() as standin:
        url = standin.url
        pid = standin.pid
    # Then
    assert url.startswith("mongodb://127.0.0.1:")
    assert url.endswith("/?directConnection=true")
    assert pid is not None
    assert standin.pid is None


async def test_the_in_process_server_serves_on_the_running_loop() -> None:
    # Given
    async with StandInServer() as server:
        mongo: Client = AsyncMongoClient(server.url)
        try:
            # When
            await mongo.standin_test.x.insert_one({"a": 1})
            # Then
            assert await mongo.standin_test.x.count_documents({"a": 1}) == 1
        finally:
            await mongo.close()


# -------------------------------------------------------------------------------------------
# Filters agree with mongomock
#
# The domain keeps to where mongomock follows MongoDB: it differs on booleans against numbers
# (it finds false == 0), on $gt/$lte against null and missing fields, on $size of a
# non-array and on null through a dotted path into a scalar, where the stand-in follows the
# server.

if hypothesis is not None:
    import mongomock.filtering

    FIELDS = ("a", "b", "c")
    scalars = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["", "x", "y"]))
    values = st.one_of(scalars, st.lists(st.integers(-3, 3), max_size=3))
    documents = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)
    comparable = st.one_of(st.integers(-3, 3), st.sampled_from(["", "x", "y"]))
    conditions = st.one_of(
        scalars,
        st.builds(lambda value: {"$eq": value}, scalars),
        st.builds(
            lambda op, value: {op: value},
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
            comparable,
        ),
        st.builds(lambda items: {"$in": items}, st.lists(scalars, max_size=3)),
        st.builds(lambda flag: {"$exists": flag}, st.booleans()),
    )
    filters = st.dictionaries(st.sampled_from(FIELDS), conditions, min_size=1, max_size=2)

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(doc=documents, query=filters)
    def test_filters_match_as_mongomock_matches(doc: dict[str, Any], query: dict[str, Any]) -> None:
        # Given a small document and a simple filter
        # When both evaluate it
        ours = compile_filter(query, {})(doc)
        theirs = mongomock.filtering.filter_applies(query, doc)  # type: ignore[no-untyped-call]
        # Then they agree
        assert ours == theirs

else:

    @pytest.mark.skip(reason="hypothesis is not installed (a dev dependency)")
    def test_filters_match_as_mongomock_matches() -> None:
        pass


async def test_stopping_the_server_fails_the_clients_next_operation() -> None:
    # Given a server stopped while a client is still connected
    server = StandInServer()
    await server.start()
    mongo: Client = AsyncMongoClient(server.url, timeoutMS=2000)
    try:
        await mongo.admin.command("ping")
        # When
        await server.close()
        # Then the client fails fast instead of hanging
        with pytest.raises(ConnectionFailure):
            await mongo.admin.command("ping")
    finally:
        await mongo.close()
