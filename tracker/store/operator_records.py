"""The tracker's other collections (the audit log, failure groups, replay jobs and their
items, purged dead letters): their names, their indexes and their retention, and the
indexes of the metadata keys operators search by (``TRACKER_SEARCH_KEYS``) on
``task_trackers``.

Retention is by TTL: the audit log's on ``at`` (its setting is the index's
``expireAfterSeconds``), the others' on ``expiresAt``, which is set when a record is done
with (a replay finished, a group resolved). Like the executions' indexes, these are created by
``tracker migrate`` and at ``tracker serve`` start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, IndexModel

from tracker.constants import DEFAULT_AUDIT_RETENTION_SECONDS
from tracker.validation import check_search_key

AUDIT: Final = "tracker_audit"
GROUPS: Final = "tracker_failure_groups"
REPLAYS: Final = "tracker_replays"
REPLAY_ITEMS: Final = "tracker_replay_items"
# The execution ids of purged dead letters, so a copy left in a broker queue never brings
# one back (``tracker.operations.purged``).
PURGED: Final = "tracker_purged"
# Metadata indexes are named with this prefix; search finds the declared keys by them.
SEARCH_PREFIX: Final = "metadata."
MAX_SEARCH_KEYS: Final = 8


def _index(*keys: tuple[str, int], **options: Any) -> IndexModel:
    name = "_".join(f"{field}_{direction}" for field, direction in keys)
    return IndexModel(list(keys), name=name, **options)


def _expiry() -> IndexModel:
    return _index(("expiresAt", ASCENDING), expireAfterSeconds=0)


def audit_indexes(retention: float = DEFAULT_AUDIT_RETENTION_SECONDS) -> list[IndexModel]:
    """The audit log, newest first: all of it (the TTL index), or by actor, action, target."""
    return [
        _index(("at", ASCENDING), expireAfterSeconds=int(retention)),
        _index(("actor", ASCENDING), ("at", DESCENDING)),
        _index(("action", ASCENDING), ("at", DESCENDING)),
        _index(("target", ASCENDING), ("at", DESCENDING)),
    ]


# Each index and the query it serves (tests/test_operations_indexes.py checks every query).
GROUP_INDEXES: Final = [
    # every group, most recently seen first
    _index(("lastSeen", DESCENDING)),
    # a queue's groups (by state), and its failing groups
    _index(("queue", ASCENDING), ("state", ASCENDING), ("lastSeen", DESCENDING)),
    # groups by state and muted flag: lists, the gauge's counts, regressed groups
    _index(("state", ASCENDING), ("muted", ASCENDING), ("lastSeen", DESCENDING)),
    # new groups (the alert)
    _index(("state", ASCENDING), ("muted", ASCENDING), ("firstSeen", DESCENDING)),
    _expiry(),
]
REPLAY_INDEXES: Final = [
    _index(("createdAt", DESCENDING)),
    _index(("state", ASCENDING), ("createdAt", DESCENDING)),
    # the runner: jobs to run whose lease is over
    _index(("state", ASCENDING), ("leaseExpiresAt", ASCENDING)),
    _expiry(),
]
REPLAY_ITEM_INDEXES: Final = [
    # a job's items in order; one item per position
    _index(("replayId", ASCENDING), ("position", ASCENDING), unique=True),
    # a job's items by outcome: the next pending one, the republished ones to follow, counts
    _index(("replayId", ASCENDING), ("outcome", ASCENDING), ("position", ASCENDING)),
    _expiry(),
]
# Only the TTL index: a purged execution is looked up by its id, which is ``_id``.
PURGED_INDEXES: Final = [_expiry()]


def search_index(key: str) -> IndexModel:
    """The index of one searchable metadata key: the key's value, newest enqueued first."""
    field = f"{SEARCH_PREFIX}{check_search_key(key)}"
    return _index((field, ASCENDING), ("enqueuedAt", DESCENDING))


def search_keys_of(existing: Mapping[str, Any]) -> frozenset[str]:
    """The searchable metadata keys, from the indexes of ``task_trackers``
    (``index_information()``), so a search by a key is always served by its index, whoever
    declared it."""
    keys = set()
    for spec in existing.values():
        fields = [(field, int(direction)) for field, direction in spec["key"]]
        if len(fields) == 2 and fields[1] == ("enqueuedAt", -1) and fields[0][1] == 1:
            name = fields[0][0]
            if name.startswith(SEARCH_PREFIX):
                keys.add(name.removeprefix(SEARCH_PREFIX))
    return frozenset(keys)


async def ensure(
    database: Any,
    tasks: Any,
    *,
    search_keys: Sequence[str] = (),
    audit_retention: float | None = None,
    in_memory: bool = False,
) -> list[str]:
    """Create what is missing of these collections' indexes and of ``search_keys``' indexes
    on ``tasks``; with ``audit_retention``, bring the audit log's TTL to it (None leaves an
    existing TTL as it is). Nothing else is dropped. Returns the names created or changed."""
    if len(search_keys) > MAX_SEARCH_KEYS:
        raise ValueError(f"at most {MAX_SEARCH_KEYS} search keys (each is an index)")
    retention = DEFAULT_AUDIT_RETENTION_SECONDS if audit_retention is None else audit_retention
    wanted = {
        AUDIT: audit_indexes(retention),
        GROUPS: GROUP_INDEXES,
        REPLAYS: REPLAY_INDEXES,
        REPLAY_ITEMS: REPLAY_ITEM_INDEXES,
        PURGED: PURGED_INDEXES,
    }
    done = []
    for name, models in wanted.items():
        done += [f"{name}.{n}" for n in await _create_missing(database[name], models)]
    done += await _create_missing(tasks, [search_index(key) for key in search_keys])
    if audit_retention is not None and not in_memory:
        ttl = (await database[AUDIT].index_information())["at_1"].get("expireAfterSeconds")
        if ttl != int(audit_retention):
            await database.command(
                "collMod", AUDIT, index={"name": "at_1", "expireAfterSeconds": int(retention)}
            )
            done.append(f"{AUDIT}.at_1")
    return done


async def _create_missing(collection: Any, models: Iterable[IndexModel]) -> list[str]:
    existing = await collection.index_information()
    missing = [model for model in models if model.document["name"] not in existing]
    if missing:
        await collection.create_indexes(missing)
    return [model.document["name"] for model in missing]
