"""Group commit: concurrent deliveries' claims and completions share round trips, and every
guarantee holds as it does one by one (tracker/store/group_commit.py, store/bulk.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockCollection
from pymongo.errors import AutoReconnect, BulkWriteError, WriteError

import tracker
from tests.conftest import in_memory
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.clock import utcnow
from tracker.delivery.decision import Decision
from tracker.errors import StaleClaimError
from tracker.store import connection, transitions
from tracker.store.claims import ClaimRequest, claim_many
from tracker.store.creation import Created, NewExecution, create_execution, create_executions
from tracker.store.group_commit import GroupCommit
from tracker.testing import RecordingMiddleware, store_failure

# -- the batching itself -----------------------------------------------------------------------


class Recorder:
    """A batch write that records its batches and answers each request with its double, or
    with the error a test names for it."""

    def __init__(self, fail: dict[int, Exception] | None = None, pause: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail or {}
        self.pause = pause

    async def __call__(self, batch: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(batch))
        await asyncio.sleep(self.pause)
        return [self.fail.get(n, n * 2) for n in batch]


async def test_a_lone_request_goes_out_at_once() -> None:
    # Given: an idle group commit
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write)
    # When
    result = await asyncio.wait_for(group.submit(21), timeout=5)
    # Then: one batch of one, with no timer in between
    assert result == 42
    assert write.batches == [[21]]


async def test_requests_of_one_burst_share_one_batch() -> None:
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(group.submit(n) for n in range(50)))
    assert results == [n * 2 for n in range(50)]
    assert write.batches == [list(range(50))]


async def test_requests_made_while_a_batch_is_in_flight_go_out_together_next() -> None:
    # Given: a slow write with one batch in flight
    write = Recorder(pause=0.05)
    group: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0.01)
    # When: more requests arrive one by one meanwhile
    later = []
    for n in range(1, 6):
        later.append(asyncio.ensure_future(group.submit(n)))
        await asyncio.sleep(0)
    # Then: they wait for the batch in flight and then share one
    assert await first == 0
    assert await asyncio.gather(*later) == [2, 4, 6, 8, 10]
    assert write.batches == [[0], [1, 2, 3, 4, 5]]


async def test_no_batch_exceeds_max_batch() -> None:
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write, max_batch=7)
    await asyncio.gather(*(group.submit(n) for n in range(30)))
    assert [len(batch) for batch in write.batches] == [7, 7, 7, 7, 2]
    assert sorted(n for batch in write.batches for n in batch) == list(range(30))


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Recorder(), max_batch=0)


async def test_each_request_gets_its_own_error() -> None:
    refused = WriteError("Document failed validation", 121)
    group: GroupCommit[int, int] = GroupCommit(Recorder(fail={3: refused}))
    results = await asyncio.gather(*(group.submit(n) for n in range(5)), return_exceptions=True)
    assert results == [0, 2, 4, refused, 8]


async def test_an_error_of_the_whole_batch_is_every_requests_error() -> None:
    async def unreachable(batch: Sequence[int]) -> list[int]:
        raise AutoReconnect("no primary")

    group: GroupCommit[int, int] = GroupCommit(unreachable)
    results = await asyncio.gather(*(group.submit(n) for n in range(4)), return_exceptions=True)
    assert all(isinstance(result, AutoReconnect) for result in results)
    # And the next request is tried again, not refused for good
    group._write = Recorder()
    assert await group.submit(1) == 2


async def test_a_write_that_miscounts_its_results_fails_every_request() -> None:
    async def short(batch: Sequence[int]) -> list[int]:
        return list(batch)[:-1]

    group: GroupCommit[int, int] = GroupCommit(short)
    results = await asyncio.gather(*(group.submit(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "returned 2 results" in str(r) for r in results)


async def test_a_request_cancelled_before_its_batch_leaves_is_not_written() -> None:
    write = Recorder(pause=0.05)
    group: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(group.submit(1))
    kept = asyncio.ensure_future(group.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 0
    assert await kept == 4
    assert write.batches == [[0], [2]]


async def test_a_request_cancelled_in_flight_is_written_and_its_result_handed_over() -> None:
    # Given: a batch of three in flight, one refused alone
    abandoned: list[tuple[int, int]] = []
    write = Recorder(fail={2: WriteError("refused", 121)}, pause=0.05)
    group: GroupCommit[int, int] = GroupCommit(
        write, on_abandoned=lambda request, result: abandoned.append((request, result))
    )
    submitted = [asyncio.ensure_future(group.submit(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    # When: the first and the refused one give up while the batch is written
    submitted[0].cancel()
    submitted[2].cancel()
    # Then: the batch is written whole; the stored result nobody awaits is handed over,
    # the refusal is not (nothing was stored), the others get theirs
    assert await submitted[1] == 2
    assert write.batches == [[0, 1, 2]]
    assert abandoned == [(0, 0)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40), st.integers(1, 9))
def test_any_arrival_pattern_answers_every_request_once(
    arrivals: list[tuple[int, bool]], max_batch: int
) -> None:
    # Given: requests arriving in bursts separated by 0-3 loop turns, some failing alone
    async def scenario() -> None:
        fail = {n: WriteError(f"refused {n}", 121) for n, (_, bad) in enumerate(arrivals) if bad}
        write = Recorder(fail=fail, pause=0.001)
        group: GroupCommit[int, int] = GroupCommit(write, max_batch=max_batch)
        pending = []
        for n, (turns, _) in enumerate(arrivals):
            for _ in range(turns):
                await asyncio.sleep(0)
            pending.append(asyncio.ensure_future(group.submit(n)))
        results = await asyncio.gather(*pending, return_exceptions=True)
        # Then: each request written exactly once, answered with its own result
        written = [n for batch in write.batches for n in batch]
        assert sorted(written) == list(range(len(arrivals)))
        assert all(len(batch) <= max_batch for batch in write.batches)
        assert results == [fail.get(n, n * 2) for n in range(len(arrivals))]

    asyncio.run(scenario())


# -- batched writes in the store ---------------------------------------------------------------


@contextlib.contextmanager
def refuse_in_bulk(refused: Callable[[Any], bool], code: int = 121) -> Iterator[list[int]]:
    """Make the in-memory MongoDB refuse the operations of a bulk write that ``refused``
    picks (given each operation's filter) and apply the others, as a server does with an
    unordered bulk write; yields the sizes of the bulk writes seen."""
    original = AsyncMongoMockCollection.bulk_write
    sizes: list[int] = []

    async def bulk_write(self: Any, operations: list[Any], ordered: bool = True, **kw: Any) -> Any:
        sizes.append(len(operations))
        flags = [refused(op._filter) for op in operations]
        if not any(flags):
            return await original(self, operations, ordered=ordered, **kw)
        kept = [op for op, flag in zip(operations, flags, strict=True) if not flag]
        matched = (await original(self, kept, ordered=ordered)).matched_count if kept else 0
        errors = [
            {"index": i, "code": code, "errmsg": "Document failed validation"}
            for i, flag in enumerate(flags)
            if flag
        ]
        raise BulkWriteError(
            {"writeErrors": errors, "writeConcernErrors": [], "nMatched": matched, "nModified": 0}
        )

    setattr(AsyncMongoMockCollection, "bulk_write", bulk_write)  # noqa: B010
    try:
        yield sizes
    finally:
        setattr(AsyncMongoMockCollection, "bulk_write", original)  # noqa: B010


async def _queued(n: int, queue: str = "reports") -> list[TaskTracker]:
    return [
        (await create_execution(f"reports:{queue}:{i}", queue, {"i": i})).execution
        for i in range(n)
    ]


def _request(execution: TaskTracker, worker: str = "w1", **fence: Any) -> ClaimRequest:
    return ClaimRequest(
        execution.execution_id,
        worker=worker,
        lease=30.0,
        task_id=fence.get("task_id", execution.task_id),
        queue=fence.get("queue", execution.queue_name),
    )


@pytest.mark.usefixtures("store")
async def test_a_batch_of_claims_tells_each_delivery_what_it_found() -> None:
    # Given: two queued executions, one held by another worker, one of another queue's task
    fresh, held, other_queue = await _queued(3)
    [taken] = await claim_many([_request(held, worker="w0")])
    assert not isinstance(taken, Exception)
    assert taken.won
    # When: one batch claims them all, plus an execution nobody recorded
    missing = ClaimRequest("no-such-execution", "w1", 30.0, task_id="reports:x", queue="reports")
    results = await claim_many(
        [
            _request(fresh),
            _request(held),
            _request(other_queue, queue="invoices"),
            missing,
        ]
    )
    # Then
    won, refused, foreign, absent = results
    assert not isinstance(won, Exception)
    assert won.won
    assert won.execution is not None
    assert won.execution.claim_token == won.token
    assert not isinstance(refused, Exception)
    assert not refused.won
    assert refused.execution is not None
    assert refused.execution.status is TaskStatus.PROCESSING
    assert not isinstance(foreign, Exception)
    assert foreign.execution is None
    assert foreign.foreign
    assert not isinstance(absent, Exception)
    assert absent.execution is None
    assert not absent.foreign


# Each state an execution can be found in by a claim: the fields it is given, and whether a
# claim takes it (queued, or processing under a lease or timeout that has run out).
CLAIM_STATES: dict[str, tuple[dict[str, Any], bool]] = {
    "queued": ({}, True),
    "live-lease": ({"status": "processing", "leaseExpiresAt": 60, "claimToken": "x"}, False),
    "expired-lease": ({"status": "processing", "leaseExpiresAt": -60, "claimToken": "x"}, True),
    "no-lease-timed-out": (
        {"status": "processing", "processingStartedAt": -86400, "timeoutSeconds": 60},
        True,
    ),
    "no-lease-in-time": (
        {"status": "processing", "processingStartedAt": 0, "timeoutSeconds": 3600},
        False,
    ),
    "completed": ({"status": "completed"}, False),
    "failed": ({"status": "failed"}, False),
    "dlq": ({"status": "dlq"}, False),
}


async def _in_state(state: str) -> TaskTracker:
    """A stored execution put in ``state`` (times in the fields are seconds from now)."""
    created = await create_execution(f"reports:{state}:{uuid.uuid4().hex[:8]}", "reports", {})
    fields, _ = CLAIM_STATES[state]
    now = utcnow()
    stored = {
        name: now + timedelta(seconds=value)
        if name in ("leaseExpiresAt", "processingStartedAt")
        else value
        for name, value in fields.items()
    }
    unset = {"activeKey": ""} if stored.get("status") in ("completed", "failed", "dlq") else {}
    update: dict[str, Any] = {"$set": stored} if stored else {}
    if unset:
        update["$unset"] = unset
    if update:
        await connection.collection().update_one(
            {"executionId": created.execution.execution_id}, update
        )
    return created.execution


@pytest.mark.usefixtures("store")
@pytest.mark.parametrize("order", [1, -1])
async def test_a_batch_of_claims_takes_what_a_claim_alone_takes(order: int) -> None:
    # Given: one execution in each state for a batch, and one more in each for single claims
    states = list(CLAIM_STATES)[::order]
    batched = [await _in_state(state) for state in states]
    alone = [await _in_state(state) for state in states]
    # When: the batch is one filtered update per execution, a claim alone the pipeline
    in_batch = await claim_many([_request(execution) for execution in batched])
    one_by_one = [(await claim_many([_request(execution)]))[0] for execution in alone]
    # Then: both take exactly the claimable ones, and leave the others as they were
    expected = [CLAIM_STATES[state][1] for state in states]
    for results, executions in ((in_batch, batched), (one_by_one, alone)):
        assert [not isinstance(r, Exception) and r.won for r in results] == expected
        after = [await TaskTracker.find_execution(e.execution_id) for e in executions]
        assert [doc is not None and doc.status for doc in after] == [
            TaskStatus.PROCESSING if won else TaskStatus(CLAIM_STATES[state][0]["status"])
            for state, won in zip(states, expected, strict=True)
        ]


@pytest.mark.usefixtures("store")
async def test_two_claims_of_one_execution_in_one_batch_have_one_winner() -> None:
    [execution] = await _queued(1)
    results = await claim_many([_request(execution, "w1"), _request(execution, "w2")])
    assert [not isinstance(r, Exception) and r.won for r in results].count(True) == 1


@pytest.mark.skipif(not in_memory(), reason="injects a refusal into the in-memory MongoDB")
@pytest.mark.usefixtures("store")
async def test_a_claim_refused_in_a_batch_fails_alone() -> None:
    executions = await _queued(4)
    bad = executions[2].execution_id
    with refuse_in_bulk(lambda query: query.get("executionId") == bad) as sizes:
        results = await claim_many([_request(e) for e in executions])
    assert sizes == [4]
    assert isinstance(results[2], WriteError)
    assert results[2].code == 121
    assert all(not isinstance(r, Exception) and r.won for i, r in enumerate(results) if i != 2)
    stored = await TaskTracker.find_execution(bad)
    assert stored is not None
    assert stored.status is TaskStatus.QUEUED


@pytest.mark.skipif(not in_memory(), reason="injects an outage into the in-memory MongoDB")
@pytest.mark.usefixtures("store")
async def test_an_unreachable_store_fails_the_whole_batch_of_claims() -> None:
    executions = await _queued(3)
    with store_failure(AutoReconnect("no primary"), ["bulk_write"]), pytest.raises(AutoReconnect):
        await claim_many([_request(e) for e in executions])


@pytest.mark.usefixtures("store")
async def test_a_batch_of_transitions_reports_each_change() -> None:
    # Given: three claimed executions, one of which another worker took over since
    executions = await _queued(3)
    claims = await claim_many([_request(e) for e in executions])
    tokens = [c.token for c in claims if not isinstance(c, Exception)]
    assert all(tokens)
    # When: completions, one with a stale token, one twice over in two batches
    batch = [
        transitions.Transition(
            e.execution_id, TaskStatus.COMPLETED, claim_token=t, task_id=e.task_id
        )
        for e, t in zip(executions, tokens, strict=True)
    ]
    stale = transitions.Transition(
        executions[1].execution_id,
        TaskStatus.COMPLETED,
        claim_token="other",
        task_id=executions[1].task_id,
    )
    first = await transitions.apply([batch[0], stale])
    second = await transitions.apply(batch)
    # Then: the stale one refused; in a batch that repeats a write already made, the count
    # of writes applied cannot say which: none claims the change, as a repeated write does
    assert first[0] == (TaskStatus.COMPLETED, True)
    assert isinstance(first[1], StaleClaimError)
    assert second == [(TaskStatus.COMPLETED, False)] * 3
    for execution in executions:
        stored = await TaskTracker.find_execution(execution.execution_id)
        assert stored is not None
        assert stored.status is TaskStatus.COMPLETED
        assert [h.status for h in stored.history].count(TaskStatus.COMPLETED) == 1
    again = await transitions.apply(
        [
            transitions.Transition(
                executions[2].execution_id,
                TaskStatus.COMPLETED,
                claim_token="not-the-holder",
                task_id=executions[2].task_id,
            ),
            batch[1],
        ]
    )
    assert isinstance(again[0], StaleClaimError)
    assert again[1] == (TaskStatus.COMPLETED, False)


@pytest.mark.skipif(not in_memory(), reason="injects a refusal into the in-memory MongoDB")
@pytest.mark.usefixtures("store")
async def test_a_transition_refused_in_a_batch_fails_alone() -> None:
    executions = await _queued(3)
    claims = await claim_many([_request(e) for e in executions])
    batch = [
        transitions.Transition(
            e.execution_id, TaskStatus.COMPLETED, claim_token=c.token, task_id=e.task_id
        )
        for e, c in zip(executions, claims, strict=True)
        if not isinstance(c, Exception)
    ]
    bad = executions[0].execution_id
    with refuse_in_bulk(lambda query: query.get("executionId") == bad):
        results = await transitions.apply(batch)
    assert isinstance(results[0], WriteError)
    assert results[1:] == [(TaskStatus.COMPLETED, True)] * 2


def _node_execution(task_id: str, **fields: Any) -> dict[str, Any]:
    """An execution as a Node service without the plugin writes it: no ``activeKey`` unless
    ``fields`` give one."""
    now = utcnow()
    return {
        "taskId": task_id,
        "executionId": f"node-{task_id}",
        "queueName": "reports",
        "status": "queued",
        "retryCount": 0,
        "enqueuedAt": now,
        "createdAt": now,
        "updatedAt": now,
        **fields,
    }


@pytest.mark.usefixtures("store")
async def test_a_batch_of_creations_dedupes_within_itself_and_against_the_store() -> None:
    # Given: a task already active (written without activeKey, as a Node service without
    # the plugin writes it), and a batch naming it, a new task twice, and two more
    await connection.collection().insert_one(_node_execution("reports:node", executionId="node-1"))
    batch = [
        NewExecution("reports:node", "reports", {"n": 0}).checked(),
        NewExecution("reports:twice", "reports", {"n": 1}).checked(),
        NewExecution("reports:twice", "reports", {"n": 2}).checked(),
        NewExecution("reports:a", "reports", {"n": 3}).checked(),
        NewExecution("reports:b", "reports", {"n": 4}).checked(),
    ]
    # When
    results = await create_executions(batch)
    # Then
    node, first, second, a, b = results
    assert isinstance(node, Created)
    assert node.deduplicated
    assert node.execution.execution_id == "node-1"
    assert isinstance(first, Created)
    assert isinstance(second, Created)
    assert [first.deduplicated, second.deduplicated].count(True) == 1
    assert first.document["executionId"] == second.document["executionId"]
    for created in (a, b):
        assert isinstance(created, Created)
        assert not created.deduplicated
        stored = await TaskTracker.find_execution(created.document["executionId"])
        assert stored is not None
        assert stored.status is TaskStatus.QUEUED
        assert stored.history[0].message == "enqueued"


# An execution already stored for a task: tracker-written (with activeKey), Node-written
# without the plugin (no activeKey), or finished.
STORED_KINDS = ("queued", "queued-by-node", "processing-by-node", "completed", None)


@settings(max_examples=25, deadline=None)
@given(
    stored=st.lists(st.sampled_from(STORED_KINDS), min_size=3, max_size=3),
    batch=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from([TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.DLQ]),
            st.sampled_from(["fresh", "stored"]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_a_batch_of_creations_leaves_one_active_execution_per_task(
    stored: list[str | None], batch: list[tuple[int, TaskStatus, str]]
) -> None:
    """Any batch of creations, against any execution already stored for its tasks: a task
    ends with at most one active execution; each creation is its own new execution, or
    the duplicate of the one it met (the task's active execution, or the same id)."""

    async def scenario() -> None:
        url = os.environ.get("TRACKER_MONGODB_URL") or None
        await tracker.connect(url, f"tracker_test_{uuid.uuid4().hex[:12]}")
        try:
            await connection.ensure_indexes()
            await _check_creations(stored, batch)
        finally:
            await connection.collection().database.client.drop_database(
                connection.collection().database.name
            )
            await tracker.disconnect()

    asyncio.run(scenario())


async def _check_creations(
    stored: list[str | None], batch: list[tuple[int, TaskStatus, str]]
) -> None:
    # Given
    for task, kind in enumerate(stored):
        if kind is None:
            continue
        tracked = {"activeKey": f"t{task}"} if kind in ("queued", "processing") else {}
        document = _node_execution(
            f"t{task}", executionId=f"stored-{task}", status=kind.split("-")[0], **tracked
        )
        await connection.collection().insert_one(document)
    news = [
        NewExecution(
            f"t{task}",
            "reports",
            {"n": n},
            execution_id=f"stored-{task}" if which == "stored" else None,
            status=status,
        ).checked()
        for n, (task, status, which) in enumerate(batch)
    ]
    # When
    results = await create_executions(news)
    # Then
    assert len(results) == len(news)
    active = (
        await connection.collection()
        .find({"status": {"$in": ["queued", "processing"]}})
        .to_list(None)
    )
    assert all(count == 1 for count in Counter(doc["taskId"] for doc in active).values())
    for new, result in zip(news, results, strict=True):
        assert isinstance(result, Created), result
        document = result.document
        assert document["taskId"] == new.task_id
        kept = await connection.collection().find_one({"executionId": document["executionId"]})
        assert kept is not None
        if not result.deduplicated:
            assert kept["status"] == new.status.value
            assert new.execution_id in (None, document["executionId"])
        elif document["executionId"] != new.execution_id:
            # It met its task's active execution: only an active creation may.
            assert new.status.is_active
            assert kept["status"] in ("queued", "processing")
    created = [r.document["executionId"] for r in results if not r.deduplicated]
    assert len(created) == len(set(created))


@pytest.mark.usefixtures("store")
async def test_a_node_record_the_model_refuses_is_a_duplicate_and_fails_nobody() -> None:
    # Given: an active execution the Python model cannot read (metadata null)
    await connection.collection().insert_one(_node_execution("reports:node", metadata=None))
    # When: it is met in a batch with another task
    node, other = await create_executions(
        [
            NewExecution("reports:node", "reports", {"n": 1}).checked(),
            NewExecution("reports:other", "reports", {"n": 2}).checked(),
        ]
    )
    # Then: the one is its duplicate, read as stored; the other is created
    assert isinstance(node, Created)
    assert node.deduplicated
    assert node.document["executionId"] == "node-reports:node"
    assert isinstance(other, Created)
    assert not other.deduplicated


@pytest.mark.usefixtures("store")
async def test_a_finished_execution_left_with_its_active_key_is_the_duplicate() -> None:
    # Given: a Node service completed an execution and left its activeKey, which the unique
    # index holds against every new active execution of the task
    stale = _node_execution("reports:stale", status="completed", activeKey="reports:stale")
    await connection.collection().insert_one(stale)
    # When
    [result] = await create_executions([NewExecution("reports:stale", "reports", {}).checked()])
    # Then: found, not retried until "it keeps conflicting"
    assert isinstance(result, Created)
    assert result.deduplicated
    assert result.document["executionId"] == "node-reports:stale"


@pytest.mark.usefixtures("store")
async def test_documents_a_failed_bulk_write_had_stored_are_created_not_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a bulk write that stores its first documents and then fails as one PyMongo
    # splits in several messages fails on a later document it cannot encode
    from tracker.store import creation

    real = creation.update_each

    async def partly_applied(operations: Sequence[Any]) -> Any:
        if len(operations) == 1:  # the documents retried one by one: written as usual
            return await real(operations)
        await real(list(operations)[:2])
        raise OverflowError("MongoDB can only handle up to 8-byte ints")

    monkeypatch.setattr(creation, "update_each", partly_applied)
    batch = [NewExecution(f"reports:split-{n}", "reports", {"n": n}).checked() for n in range(3)]
    # When
    results = await create_executions(batch)
    # Then: each is created, once, and none is reported as its own duplicate
    assert [isinstance(r, Created) and not r.deduplicated for r in results] == [True] * 3
    stored = await connection.collection().count_documents({"queueName": "reports"})
    assert stored == 3


@pytest.mark.usefixtures("store")
async def test_a_conflict_that_cannot_be_looked_up_fails_that_creation_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a task already active, and MongoDB failing the lookup of what its creation met
    from tracker.store import creation

    await connection.collection().insert_one(_node_execution("reports:busy"))

    async def unreachable(document: Any) -> Any:
        raise AutoReconnect("connection lost")

    monkeypatch.setattr(creation, "_find_conflict", unreachable)
    # When: it is created in a batch with another task
    busy, other = await create_executions(
        [
            NewExecution("reports:busy", "reports", {}).checked(),
            NewExecution("reports:free", "reports", {}).checked(),
        ]
    )
    # Then: only its own creation fails; the other, stored, is reported created (its
    # enqueue publishes it)
    assert isinstance(busy, AutoReconnect)
    assert isinstance(other, Created)
    assert not other.deduplicated


@pytest.mark.usefixtures("store")
async def test_a_creation_the_store_cannot_hold_fails_alone() -> None:
    # Given: a batch where one payload holds an integer BSON cannot encode
    batch = [
        NewExecution("reports:ok-1", "reports", {"n": 1}).checked(),
        NewExecution("reports:huge", "reports", {"n": 2**70}).checked(),
        NewExecution("reports:ok-2", "reports", {"n": 3}).checked(),
    ]
    # When
    ok_1, huge, ok_2 = await create_executions(batch)
    # Then
    assert isinstance(huge, OverflowError)
    assert isinstance(ok_1, Created)
    assert isinstance(ok_2, Created)
    assert await TaskTracker.find({"taskId": "reports:huge"}).to_list() == []


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_concurrent_enqueues_share_their_writes(broker: Broker) -> None:
    # Given
    queue = await broker.new_queue()
    async with tracker.Publisher(broker.url) as pub:
        # When: 40 enqueues at once, two of them for one task
        results = await asyncio.gather(
            *(pub.enqueue(queue, {"n": n}, task_id=f"{queue}:{n}") for n in range(39)),
            pub.enqueue(queue, {"n": 0}, task_id=f"{queue}:0"),
        )
        batches = pub._enqueuer.creations.batches
    # Then: fewer rounds trips than enqueues, one execution per task
    assert batches < 40
    assert sum(r.deduplicated for r in results) == 1
    assert len({r.execution_id for r in results}) == 39
    await broker.wait_depth(queue, 39)


# -- group commit under a worker ---------------------------------------------------------------


class FreezeAfterOutcome(tracker.Middleware):
    """Freezes every delivery once its outcome is recorded, before its ack, as if the
    process died there."""

    def __init__(self) -> None:
        self.frozen = 0

    async def after_outcome(self, task: TaskContext, decision: Decision) -> None:
        self.frozen += 1
        await asyncio.Event().wait()


@pytest.mark.rabbitmq
@pytest.mark.usefixtures("store")
async def test_a_crash_between_the_batched_write_and_the_acks_redelivers_and_skips(
    broker: Broker,
) -> None:
    # Given: a worker that dies after its batched completions are durable, before any ack
    queue = await broker.new_queue()
    runs: Counter[str] = Counter()
    n = 30

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        runs[task.execution_id] += 1
        return "done"

    async with tracker.Publisher(broker.url) as pub:
        for i in range(n):
            await pub.enqueue(queue, {"i": i}, task_id=f"reports:batched:{i}")
    freeze = FreezeAfterOutcome()
    first = tracker.Worker([handle], broker.url, concurrency=n, middleware=[freeze])
    await first.start()
    async with asyncio.timeout(20):
        while freeze.frozen < n:
            await asyncio.sleep(0.02)
    batches = first.processors[queue].outcomes.completions.batches
    await first.abort()
    # When: a second worker gets every delivery again
    recorder = RecordingMiddleware()
    async with tracker.Worker([handle], broker.url, middleware=[recorder]):
        await recorder.wait_for(duplicate=n)
        await broker.wait_depth(queue, 0)
    # Then: the completions were written in fewer round trips than deliveries, and no
    # handler ran twice
    assert batches < n
    assert sorted(runs.values()) == [1] * n
    for i in range(n):
        [done] = await wait_status(f"reports:batched:{i}", "completed")
        assert done.status is TaskStatus.COMPLETED


@pytest.mark.rabbitmq
@pytest.mark.skipif(not in_memory(), reason="injects a refusal into the in-memory MongoDB")
@pytest.mark.usefixtures("store")
@pytest.mark.parametrize(
    ("code", "fate"),
    [(121, TaskStatus.DLQ), (91, TaskStatus.COMPLETED)],
    ids=["permanent-refusal-dead-letters-it", "transient-refusal-is-retried"],
)
async def test_a_batch_with_one_failing_write_settles_each_message(
    broker: Broker, code: int, fate: TaskStatus
) -> None:
    # Given: a burst of deliveries, and a store that refuses one of their completions in a
    # bulk write (for good: validation; or for now: a shutdown in progress, once)
    queue = await broker.new_queue()
    n = 12
    runs: Counter[str] = Counter()
    gate = asyncio.Event()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        runs[task.task_id] += 1
        await gate.wait()
        return "done"

    victim = f"reports:one-bad:{n // 2}"
    refusals = {"left": 1 if code == 91 else 10**6}

    def refused(query: Any) -> bool:
        hit = query.get("taskId") == victim and "claimToken" in query
        if hit and refusals["left"] > 0:
            refusals["left"] -= 1
            return True
        return False

    recorder = RecordingMiddleware()
    with refuse_in_bulk(refused, code) as sizes:
        async with tracker.Worker(
            [handle], broker.url, concurrency=n, middleware=[recorder]
        ) as worker:
            async with tracker.Publisher(broker.url) as pub:
                for i in range(n):
                    await pub.enqueue(queue, {"i": i}, task_id=f"reports:one-bad:{i}")
            async with asyncio.timeout(20):
                while recorder.counts["after_claim"] < n:
                    await asyncio.sleep(0.02)
            # When: every handler returns at once
            gate.set()
            await recorder.wait_for(**{"completed": n - 1})
            await broker.wait_depth(queue, 0)
            batches = worker.processors[queue].outcomes.completions.batches
    # Then: the others completed in shared round trips; the refused one met its own fate
    assert max(sizes) > 1
    assert batches < n
    statuses = {
        i: (await wait_status(f"reports:one-bad:{i}", fate.value if i == n // 2 else "completed"))
        for i in range(n)
    }
    assert all(
        chain[-1].status is TaskStatus.COMPLETED for i, chain in statuses.items() if i != n // 2
    )
    victim_chain = statuses[n // 2]
    assert [d.status for d in victim_chain] == [fate]
    if fate is TaskStatus.DLQ:
        assert "could not be stored" in (victim_chain[0].error_message or "")
    assert set(runs.values()) == {1}
    assert await broker.dlq_depth(queue) == 0
    assert connection.is_connected()
