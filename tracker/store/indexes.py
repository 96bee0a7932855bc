"""The indexes of ``task_trackers`` in its two sets, and keeping a collection in step.

The default set is the Mongoose schema's seven indexes, a unique ``executionId`` and the
tracker's own. A sharded collection (shard key ``{taskId: 1}``) can only enforce unique
indexes prefixed by the shard key, so the sharded set keeps ``executionId`` indexed but not
unique (``{taskId, executionId}`` is the unique constraint there) and makes the active-task
index ``{taskId, activeKey}``. Indexes are created by ``tracker migrate`` and at
``tracker serve`` start, never by every command; connecting only checks that the ones the
guarantees rest on are there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel


def _index(*keys: tuple[str, int], **options: Any) -> IndexModel:
    """An index named as MongoDB names it by default, so names are predictable."""
    name = "_".join(f"{field}_{direction}" for field, direction in keys)
    return IndexModel(list(keys), name=name, **options)


# Each index and the query it serves; tests/test_indexes.py checks that every query the store
# issues is served by one of them.
DEFAULT_INDEXES: list[IndexModel] = [
    # the Mongoose schema: the primary unique constraint
    _index(("taskId", ASCENDING), ("executionId", ASCENDING), unique=True),
    # the Mongoose schema: deduplication (latest execution of a task in a status)
    _index(("taskId", ASCENDING), ("status", ASCENDING), ("enqueuedAt", DESCENDING)),
    # the Mongoose schema: queue operations and get_queue_stats
    _index(("queueName", ASCENDING), ("status", ASCENDING), ("enqueuedAt", DESCENDING)),
    # the Mongoose schema: stuck detection across queues (the sweeper)
    _index(("status", ASCENDING), ("processingStartedAt", ASCENDING)),
    # the Mongoose schema: error analysis
    _index(("errorCategory", ASCENDING), ("failedAt", DESCENDING)),
    # the Mongoose schema: retry chain
    _index(("taskId", ASCENDING), ("createdAt", ASCENDING)),
    # the Mongoose schema: monitoring by status
    _index(("status", ASCENDING), ("updatedAt", DESCENDING)),
    # idempotency: every lookup by executionId
    _index(("executionId", ASCENDING), unique=True),
    # one active execution per task, enforced by the database: the field exists only while
    # the execution is queued or processing
    _index(
        ("activeKey", ASCENDING),
        unique=True,
        partialFilterExpression={"activeKey": {"$exists": True}},
    ),
    # stuck detection in one queue (find_stuck_tasks)
    _index(("queueName", ASCENDING), ("status", ASCENDING), ("processingStartedAt", ASCENDING)),
    # retention: MongoDB deletes a document once expiresAt has passed
    _index(("expiresAt", ASCENDING), expireAfterSeconds=0),
    # the sweeper: queued executions whose publish the broker did not confirm
    _index(("queueName", ASCENDING), ("status", ASCENDING), ("publishUnconfirmedAt", ASCENDING)),
    # stuck = past the attempt's own timeout: across queues (`tracker stuck`) and per queue
    # (the stuck gauge and alert)
    _index(("status", ASCENDING), ("timeoutAt", ASCENDING)),
    _index(("queueName", ASCENDING), ("status", ASCENDING), ("timeoutAt", ASCENDING)),
    # a failure group's dead letters, newest first
    _index(("groupId", ASCENDING), ("status", ASCENDING), ("failedAt", DESCENDING)),
]

ACTIVE_PARTIAL = {"activeKey": {"$exists": True}}


def _sharded(index: IndexModel) -> IndexModel:
    spec = index.document
    if spec["name"] == "executionId_1":
        return _index(("executionId", ASCENDING))
    if spec["name"] == "activeKey_1":
        return _index(
            ("taskId", ASCENDING),
            ("activeKey", ASCENDING),
            unique=True,
            partialFilterExpression=ACTIVE_PARTIAL,
        )
    return index


SHARDED_INDEXES: list[IndexModel] = [_sharded(index) for index in DEFAULT_INDEXES]

# What the guarantees rest on, in the order a problem is reported: one active execution per
# task, then the uniqueness of executions.
REQUIRED_DEFAULT = ("activeKey_1", "executionId_1", "taskId_1_executionId_1")
REQUIRED_SHARDED = ("taskId_1_activeKey_1", "taskId_1_executionId_1")


def index_set(sharded: bool) -> list[IndexModel]:
    return SHARDED_INDEXES if sharded else DEFAULT_INDEXES


def _shape(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two indexes the same: keys in order and the options that matter."""
    keys = tuple((name, int(direction)) for name, direction in dict(spec["key"]).items())
    return (
        keys,
        bool(spec.get("unique", False)),
        spec.get("partialFilterExpression"),
        spec.get("expireAfterSeconds"),
    )


@dataclass
class IndexPlan:
    """What ``migrate`` does to reach a set: ``drop`` first (names whose definition differs,
    or that belong to the other set), then ``create``."""

    create: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)


def plan(existing: Mapping[str, Any], sharded: bool) -> IndexPlan:
    """The steps from the collection's ``existing`` indexes (``index_information()``) to the
    set for ``sharded``. Indexes that are neither the tracker's nor in conflict are kept."""
    wanted = {index.document["name"]: index.document for index in index_set(sharded)}
    other = {index.document["name"] for index in index_set(not sharded)} - set(wanted)
    result = IndexPlan()
    for name, spec in existing.items():
        if name == "_id_":
            continue
        if name in other or (name in wanted and _shape(spec) != _shape(wanted[name])):
            result.drop.append(name)
    for name in wanted:
        if name not in existing or name in result.drop:
            result.create.append(name)
    return result


def missing_required(existing: Mapping[str, Any], sharded: bool) -> list[str]:
    """The indexes the guarantees rest on that are absent or not defined as they must be."""
    wanted = {index.document["name"]: index.document for index in index_set(sharded)}
    required = REQUIRED_SHARDED if sharded else REQUIRED_DEFAULT
    return [
        name
        for name in required
        if name not in existing or _shape(existing[name]) != _shape(wanted[name])
    ]


async def apply(collection: Any, steps: IndexPlan, sharded: bool) -> None:
    """Carry out ``steps``: the new unique indexes first, so that no guarantee is ever
    without its index, then the drops, then the remaining creates."""
    models = {index.document["name"]: index for index in index_set(sharded)}
    first = [n for n in steps.create if n not in steps.drop and models[n].document.get("unique")]
    await _create(collection, (models[n] for n in first))
    for name in steps.drop:
        await collection.drop_index(name)
    await _create(collection, (models[n] for n in steps.create if n not in first))


async def _create(collection: Any, indexes: Iterable[IndexModel]) -> None:
    batch = list(indexes)
    if batch:
        await collection.create_indexes(batch)
