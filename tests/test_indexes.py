"""Every index the design names exists, and every query the store issues is served by one."""

from __future__ import annotations

from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockCollection

import tracker
from tests.conftest import in_memory
from tests.factories import execution_in
from tracker import (
    TaskStatus,
    TaskTracker,
    claim,
    create_execution,
    transition,
    wait_until_complete,
)
from tracker.constants import COLLECTION
from tracker.models import INDEXES
from tracker.store import connection
from tracker.store.executions import find_recent_completion
from tracker.store.leases import release_claim, renew_lease

pytestmark = [pytest.mark.mongodb, pytest.mark.usefixtures("store")]

EXPECTED = {
    "taskId_1_executionId_1": [("taskId", 1), ("executionId", 1)],
    "taskId_1_status_1_enqueuedAt_-1": [("taskId", 1), ("status", 1), ("enqueuedAt", -1)],
    "queueName_1_status_1_enqueuedAt_-1": [("queueName", 1), ("status", 1), ("enqueuedAt", -1)],
    "status_1_processingStartedAt_1": [("status", 1), ("processingStartedAt", 1)],
    "errorCategory_1_failedAt_-1": [("errorCategory", 1), ("failedAt", -1)],
    "taskId_1_createdAt_1": [("taskId", 1), ("createdAt", 1)],
    "status_1_updatedAt_-1": [("status", 1), ("updatedAt", -1)],
    "executionId_1": [("executionId", 1)],
    "activeKey_1": [("activeKey", 1)],
    "queueName_1_status_1_processingStartedAt_1": [
        ("queueName", 1),
        ("status", 1),
        ("processingStartedAt", 1),
    ],
    "expiresAt_1": [("expiresAt", 1)],
    "queueName_1_status_1_publishUnconfirmedAt_1": [
        ("queueName", 1),
        ("status", 1),
        ("publishUnconfirmedAt", 1),
    ],
    "status_1_timeoutAt_1": [("status", 1), ("timeoutAt", 1)],
    "queueName_1_status_1_timeoutAt_1": [("queueName", 1), ("status", 1), ("timeoutAt", 1)],
    "groupId_1_status_1_failedAt_-1": [("groupId", 1), ("status", 1), ("failedAt", -1)],
}
UNIQUE_FIELDS = {"executionId", "activeKey", "_id"}
RANGE_OPERATORS = {"$lt", "$lte", "$gt", "$gte"}


async def test_every_index_exists_by_name_and_key_order() -> None:
    info = await connection.collection().index_information()
    for name, keys in EXPECTED.items():
        assert name in info, f"missing index {name}"
        assert [(field, int(direction)) for field, direction in info[name]["key"]] == keys
    assert info["executionId_1"]["unique"]
    assert info["taskId_1_executionId_1"]["unique"]
    assert info["expiresAt_1"]["expireAfterSeconds"] == 0
    assert info["activeKey_1"]["unique"]
    if in_memory():
        assert info["activeKey_1"]["sparse"]  # the in-memory store: tracker/store/inmemory.py
    else:
        assert info["activeKey_1"]["partialFilterExpression"] == {"activeKey": {"$exists": True}}


def _served(query: dict[str, Any], sort: list[tuple[str, int]], *, in_or: bool = False) -> bool:
    """Some index has the query's equality fields first, then its ranges and sort. Each
    branch of an ``$or`` is planned on its own: served when every branch is, a branch whose
    trailing range is left to filter within its equality prefix included."""
    if "$or" in query:
        rest = {f: v for f, v in query.items() if f != "$or"}
        return all(_served({**rest, **branch}, sort, in_or=True) for branch in query["$or"])
    if UNIQUE_FIELDS & query.keys():
        return True
    equality = {
        f for f, v in query.items() if not (isinstance(v, dict) and RANGE_OPERATORS & v.keys())
    }
    ranged = {f for f in query if f not in equality} | {f for f, _ in sort}
    for index in INDEXES:
        keys = [field for field, _ in index.document["key"].items()]
        head, tail = keys[: len(equality)], keys[len(equality) : len(equality) + len(ranged)]
        if set(head) == equality and set(tail) == ranged and equality | ranged:
            return True
        if in_or and set(head) == equality and len(equality) >= 2 and set(tail) <= ranged:
            return True
    return False


@pytest.fixture
def recorded_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[str, dict[str, Any], list[Any]]]:
    if not in_memory():
        pytest.skip("records queries through the in-memory collection")
    seen: list[tuple[str, dict[str, Any], list[Any]]] = []

    def record(name: str) -> None:
        original = getattr(AsyncMongoMockCollection, name)

        def wrapper(self: Any, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
            if self.name != COLLECTION:
                # The operations collections have their own checks (tests/index_shapes.py).
                return original(self, filter, *args, **kwargs)
            if name == "aggregate":
                match = next((s["$match"] for s in filter if "$match" in s), {})
                seen.append((name, match, []))
            elif name not in ("insert_one", "insert_many"):
                seen.append((name, dict(filter or {}), list(kwargs.get("sort") or [])))
            return original(self, filter, *args, **kwargs)

        monkeypatch.setattr(AsyncMongoMockCollection, name, wrapper)

    for name in (
        "find",
        "find_one",
        "find_one_and_update",
        "update_one",
        "update_many",
        "delete_one",
        "delete_many",
        "count_documents",
        "aggregate",
    ):
        record(name)
    return seen


async def test_every_store_query_is_served_by_an_index(
    recorded_queries: list[tuple[str, dict[str, Any], list[Any]]],
) -> None:
    # Given: a run through every store operation
    done, token = await execution_in(TaskStatus.PROCESSING, task_id="reports:q")
    await renew_lease(done.execution_id, token or "", 30)
    await release_claim(done.execution_id, token or "")
    await transition(done.execution_id, TaskStatus.COMPLETED, claim_token=token)
    await create_execution("reports:q", "reports", {}, dedupe_window=60)
    active = await create_execution("reports:r", "reports", {})
    await create_execution("reports:r", "reports", {})
    await claim(active.execution.execution_id, worker="w", lease=30)
    await claim(active.execution.execution_id, worker="w", lease=30)
    await find_recent_completion("reports:q", 60)
    await wait_until_complete("reports:q", timeout=1)
    await TaskTracker.find_retry_chain("reports:q")
    await TaskTracker.find_stuck_tasks("reports", 60)
    await TaskTracker.get_queue_stats("reports")
    await execution_in(TaskStatus.ARCHIVED)
    # Then
    operations = {op for op, _, _ in recorded_queries}
    assert {
        "find",
        "find_one",
        "find_one_and_update",
        "update_one",
        "count_documents",
    } <= operations
    unserved = [(op, q, s) for op, q, s in recorded_queries if not _served(q, s)]
    assert unserved == []


def _uses_an_index(query: dict[str, Any], sort: list[tuple[str, int]]) -> bool:
    """Looser, for operator commands with optional filters: some index starts with a field the
    query constrains by equality, so the server never scans the collection."""
    if UNIQUE_FIELDS & query.keys():
        return True
    equality = {
        f for f, v in query.items() if not (isinstance(v, dict) and RANGE_OPERATORS & v.keys())
    }
    return any(next(iter(index.document["key"])) in equality for index in INDEXES)


async def test_every_operator_query_uses_an_index(
    recorded_queries: list[tuple[str, dict[str, Any], list[Any]]],
) -> None:
    # Given: the background statistics, the sweeper and every CLI selection
    from tracker.delivery.processor import Processor, ProcessorOptions
    from tracker.observability import QueueStatsCollector, TrackerMetrics
    from tracker.operations import dead_letters as dlq
    from tracker.service.sweeper import Sweeper

    await execution_in(TaskStatus.DLQ)
    await execution_in(TaskStatus.PROCESSING)

    async def handle(task: tracker.TaskContext) -> None: ...

    processor = Processor(tracker.tracked("reports")(handle), ProcessorOptions(worker_id="w"))

    async def publish(message: Any) -> None: ...

    await QueueStatsCollector(TrackerMetrics(), {"reports": 60}).refresh()
    await Sweeper({"reports": processor.outcomes}, publish).sweep()
    background = list(recorded_queries)
    for selection in (
        dlq.Selection(),
        dlq.Selection(queue="reports"),
        dlq.Selection(category="validation"),
        dlq.Selection(queue="reports", category="validation", older_than=60),
        dlq.Selection(older_than=60),
        dlq.Selection(group="0123456789abcdef"),
    ):
        [entry async for entry in dlq.select(selection)]
    await dlq.purge_archived(60, dry_run=True)
    await dlq.purge_archived(60)
    # Then: the hot path of the collector and sweeper is strictly served, the rest indexed
    assert background
    assert [(op, q, s) for op, q, s in background if not _served(q, s)] == []
    assert [(op, q, s) for op, q, s in recorded_queries if not _uses_an_index(q, s)] == []


def test_the_index_check_rejects_a_collection_scan() -> None:
    assert not _served({"errorMessage": "boom"}, [])
    assert not _served({}, [])
    assert not _served({"$or": [{"status": "dlq"}, {"errorMessage": "boom"}]}, [])
    assert not _served({"status": "dlq"}, [("createdAt", 1)])
    assert _served({"queueName": "q", "status": "dlq"}, [("enqueuedAt", -1)])
    assert _served({"status": "processing", "processingStartedAt": {"$lt": 1}}, [])
