"""Search: by task, group, business key, queue, status, category and time; a task's
timeline; queue summaries. Every query bounded and served by an index."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracker
from tests.conftest import in_memory
from tests.index_shapes import Query, recorded, unserved
from tracker import TaskStatus, claim, create_execution, transition
from tracker.clock import utcnow
from tracker.errors import NotFoundError
from tracker.models import INDEXES
from tracker.operations.search import TaskQuery, find_executions, queues, timeline
from tracker.store import connection, operator_records
from tracker.store.operator_records import GROUPS

__all__ = ["recorded"]
pytestmark = pytest.mark.usefixtures("store")


async def _execution(
    task_id: str,
    queue: str = "reports",
    status: TaskStatus = TaskStatus.QUEUED,
    *,
    category: str = "validation",
    group_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    retry_count: int = 0,
) -> str:
    created = await create_execution(
        task_id, queue, {"n": 1}, metadata=metadata, retry_count=retry_count
    )
    execution_id = created.execution.execution_id
    if status is TaskStatus.QUEUED:
        return execution_id
    won = await claim(execution_id, worker="w", lease=60)
    fields: dict[str, Any] = {}
    if status in (TaskStatus.DLQ, TaskStatus.FAILED):
        fields = {"errorCategory": category, "errorMessage": "boom", "errorType": "E"}
        if group_id is not None:
            fields["groupId"] = group_id
    if status is not TaskStatus.PROCESSING:
        await transition(execution_id, status, claim_token=won.token, fields=fields)
    return execution_id


async def _ids(query: TaskQuery, limit: int = 50) -> list[str]:
    page = await find_executions(query, limit=limit)
    return [e.execution_id for e in page.items]


async def test_each_filter_finds_its_executions_newest_first() -> None:
    # Given
    a = await _execution("t:a", status=TaskStatus.DLQ, group_id="g1", metadata={"customer": "c1"})
    await asyncio.sleep(0.002)
    b = await _execution("t:b", status=TaskStatus.DLQ, category="processing", group_id="g1")
    await asyncio.sleep(0.002)
    c = await _execution("t:c", queue="emails", metadata={"customer": "c1"})
    await asyncio.sleep(0.002)
    d = await _execution("t:a", status=TaskStatus.COMPLETED, retry_count=1)
    await connection.ensure_indexes(search_keys=("customer",))
    # When / Then
    assert await _ids(TaskQuery(task_id="t:a")) == [d, a]
    assert await _ids(TaskQuery(group_id="g1")) == [b, a]
    assert await _ids(TaskQuery(metadata=(("customer", "c1"),))) == [c, a]
    assert await _ids(TaskQuery(metadata=(("customer", "c1"),), queue="emails")) == [c]
    assert await _ids(TaskQuery(queue="reports")) == [d, b, a]
    assert await _ids(TaskQuery(queue="reports", status=TaskStatus.DLQ)) == [b, a]
    assert await _ids(TaskQuery(category="processing")) == [b]
    assert await _ids(TaskQuery(status=TaskStatus.QUEUED)) == [c]
    assert await _ids(TaskQuery()) == [d, c, b, a]
    assert await _ids(TaskQuery(group_id="g1", category="validation")) == [a]


async def test_a_list_leaves_out_what_can_be_large() -> None:
    # Given
    await _execution("t:a", status=TaskStatus.DLQ)
    # When
    [found] = (await find_executions(TaskQuery(task_id="t:a"))).items
    # Then
    assert found.payload is None
    assert found.history == []
    assert (await timeline("t:a"))[0].payload == {"n": 1}


async def test_time_bounds_apply_to_the_order_field() -> None:
    # Given: two dead letters an hour apart
    old = await _execution("t:old", status=TaskStatus.DLQ)
    new = await _execution("t:new", status=TaskStatus.DLQ)
    await connection.collection().update_one(
        {"executionId": old},
        {"$set": {"enqueuedAt": utcnow() - timedelta(hours=1)}},
    )
    # When
    recent = await _ids(TaskQuery(queue="reports", since=utcnow() - timedelta(minutes=5)))
    earlier = await _ids(TaskQuery(queue="reports", until=utcnow() - timedelta(minutes=5)))
    # Then
    assert (recent, earlier) == ([new], [old])


async def test_pages_cover_a_queue_once_even_when_times_tie() -> None:
    # Given: nine executions, six of them enqueued at the same millisecond
    ids = [await _execution(f"t:{n}") for n in range(9)]
    same = utcnow()
    await connection.collection().update_many(
        {"executionId": {"$in": ids[:6]}}, {"$set": {"enqueuedAt": same}}
    )
    # When
    seen: list[str] = []
    cursor = None
    while True:
        page = await find_executions(TaskQuery(queue="reports"), cursor=cursor, limit=4)
        seen += [e.execution_id for e in page.items]
        if (cursor := page.next_cursor) is None:
            break
    # Then
    assert sorted(seen) == sorted(ids)


async def test_an_undeclared_metadata_key_is_refused() -> None:
    with pytest.raises(ValueError, match="TRACKER_SEARCH_KEYS"):
        await find_executions(TaskQuery(metadata=(("customer", "c1"),)))
    with pytest.raises(ValueError, match="not searchable"):
        await find_executions(TaskQuery(metadata=(("$where", "1"),)))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"task_id": {"$ne": None}}, TypeError),
        ({"queue": ""}, ValueError),
        ({"status": "exploded"}, ValueError),
        ({"category": "\x1b[2J"}, ValueError),
        ({"since": "yesterday"}, TypeError),
        ({"metadata": (("customer", {"$gt": ""}),)}, TypeError),
        ({"metadata": (("customer",),)}, TypeError),
        ({"metadata": tuple(("k", "v") for _ in range(5))}, ValueError),
    ],
)
def test_hostile_queries_are_refused_before_any_query(
    fields: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        TaskQuery(**fields)


@pytest.mark.skipif(not in_memory(), reason="each example connects an in-memory store of its own")
@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_any_metadata_filter_is_refused_or_answered(key: str, value: str) -> None:
    # Given: a declared key and any key and value as a caller may send them
    async def search() -> list[str]:
        await tracker.connect(None, "tracker_search_hypothesis")
        try:
            await connection.ensure_indexes(search_keys=("customer",))
            query = TaskQuery(metadata=(("customer", "c"), (key, value)))
            return [e.execution_id for e in (await find_executions(query)).items]
        finally:
            await tracker.disconnect()

    # When
    try:
        answer: list[str] | str = asyncio.run(search())
    except ValueError as error:
        answer = str(error)
    # Then: a ValueError naming the problem, or an answer
    assert answer == [] or "metadata" in str(answer)


async def test_a_timeline_is_every_attempt_oldest_first() -> None:
    # Given
    first = await _execution("t:chain", status=TaskStatus.FAILED)
    second = await _execution("t:chain", status=TaskStatus.DLQ, retry_count=1)
    # When
    chain = await timeline("t:chain")
    # Then
    assert [e.execution_id for e in chain] == [first, second]
    assert chain[1].history[-1].status is TaskStatus.DLQ
    assert chain[1].error_message == "boom"
    with pytest.raises(NotFoundError):
        await timeline("t:nothing")
    with pytest.raises(TypeError):
        await timeline({"$gt": ""})  # type: ignore[arg-type]


async def test_queues_summarise_counts_waiting_work_and_failing_groups() -> None:
    # Given
    waiting = await _execution("t:w")
    await _execution("t:d", status=TaskStatus.DLQ)
    await _execution("t:e", queue="emails", status=TaskStatus.COMPLETED)
    groups = connection.database()[GROUPS]
    await groups.insert_many(
        [
            {"_id": "g1", "queue": "reports", "state": "open"},
            {"_id": "g2", "queue": "reports", "state": "resolved"},
            {"_id": "g3", "queue": "reports", "state": "regressed"},
        ]
    )
    # When
    summaries = {s.name: s for s in await queues()}
    # Then
    assert set(summaries) == {"reports", "emails"}
    reports = summaries["reports"]
    assert reports.counts["queued"] == 1
    assert reports.counts["dlq"] == 1
    assert reports.failing_groups == 2
    assert reports.oldest_queued_at is not None
    execution = await tracker.TaskTracker.find_execution(waiting)
    assert execution is not None
    assert reports.oldest_queued_at == execution.enqueued_at
    assert summaries["emails"].oldest_queued_at is None


async def test_every_search_query_is_served_by_an_index(recorded: list[Query]) -> None:
    # Given: every query shape, with and without a status, and a second page
    await connection.ensure_indexes(search_keys=("customer",))
    for n in range(3):
        await _execution(f"t:{n}", status=TaskStatus.DLQ, group_id="g", metadata={"customer": "c"})
    del recorded[:]
    statuses = (None, TaskStatus.DLQ)
    shapes = [
        {"task_id": "t:1"},
        {"group_id": "g"},
        {"metadata": (("customer", "c"),)},
        {"queue": "reports", "category": "validation"},
        {"category": "validation"},
        {},
    ]
    for shape in shapes:
        for status in statuses:
            query = TaskQuery(status=status, since=utcnow() - timedelta(days=1), **shape)
            page = await find_executions(query, limit=1)
            await find_executions(query, cursor=page.next_cursor, limit=1)
    await timeline("t:1")
    await queues()
    # Then
    indexes = {
        connection.collection().name: [*INDEXES, operator_records.search_index("customer")],
        GROUPS: operator_records.GROUP_INDEXES,
    }
    assert len(recorded) > 20
    assert unserved(recorded, indexes) == []


def test_the_index_check_rejects_what_no_index_serves() -> None:
    def query(filter_: dict[str, Any], sort: list[tuple[str, int]]) -> Query:
        return Query("task_trackers", "find", filter_, sort)

    assert unserved([query({"errorMessage": "boom"}, [])], {"task_trackers": INDEXES})
    assert unserved([query({"status": "dlq"}, [("createdAt", -1)])], {"task_trackers": INDEXES})
    assert unserved([query({}, [("failedAt", -1)])], {"task_trackers": INDEXES})
    served = query({"queueName": "q", "status": {"$in": ["dlq"]}}, [("enqueuedAt", -1)])
    assert unserved([served], {"task_trackers": INDEXES}) == []
