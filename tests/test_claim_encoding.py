"""A batch's claim write on a server is encoded once per consumer (store/claim_pipeline.py
``_EncodedClaim``): the bytes sent are those of the dictionaries, and the claims they make
through the real PyMongo client are the claims the dictionaries make."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracker
from tests.mongo_standin import StandIn
from tracker import TaskStatus
from tracker.clock import utcnow
from tracker.store import claim_pipeline, connection
from tracker.store.claims import ClaimRequest, claim_many
from tracker.store.clock import NOW, ServerClock
from tracker.store.creation import create_execution

# Any text BSON can carry: a token or worker id with NUL, quotes or any plane.
texts = st.text(st.characters(codec="utf-8"), max_size=60)


@given(
    token=texts,
    worker=texts.filter(lambda worker: not worker.startswith("$")),
    lease=st.floats(0.001, 1e6),
    timeout=st.none() | st.floats(0.001, 1e6),
    default_max_retries=st.none() | st.integers(0, 10_000),
)
def test_the_encoded_claim_sends_the_bytes_of_the_dictionaries(
    token: str,
    worker: str,
    lease: float,
    timeout: float | None,
    default_max_retries: int | None,
) -> None:
    # Given: a store on a server, whose clock is $$NOW
    with mock.patch.object(connection, "server_clock", return_value=ServerClock(False)):
        claimable, fields = claim_pipeline._build_claim_template(
            worker, lease, timeout, default_max_retries, NOW
        )
        expected_condition = {"$expr": claimable}
        expected_update = [{"$set": {**fields, "claimToken": token}}]
        # When
        condition, update = claim_pipeline.claim_write(
            token, worker, lease, timeout, default_max_retries
        )
    # Then: byte for byte, key order included
    assert bson.encode(condition) == bson.encode(expected_condition)
    assert bson.encode({"u": update}) == bson.encode({"u": expected_update})


def test_a_claim_keeps_the_types_it_was_given_whatever_came_before() -> None:
    # Given: a consumer's timeout and retries as an int, then as a float and a bool
    given = [(30, 1), (30.0, True), (30, 1)]
    with mock.patch.object(connection, "server_clock", return_value=ServerClock(False)):
        for timeout, retries in given:
            # When
            _, update = claim_pipeline.claim_write("t", "w", 30.0, timeout, retries)
            # Then: each is written as given, not as the first equal one cached
            claimed = bson.decode(bson.encode({"u": update}))["u"][0]["$set"]
            assert type(claimed["timeoutSeconds"]) is type(timeout)
            assert type(claimed["maxRetries"]["$ifNull"][1]) is type(retries)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
async def server_store(standin: StandIn) -> AsyncIterator[None]:
    await tracker.connect(standin.url, f"tracker_claims_{uuid.uuid4().hex[:10]}")
    await connection.ensure_indexes()
    try:
        yield
    finally:
        await tracker.disconnect()


async def _execution(task_id: str, **stored: Any) -> str:
    created = await create_execution(task_id, "claims-q", {"n": task_id})
    if stored:
        await connection.collection().update_one(
            {"executionId": created.execution.execution_id}, {"$set": stored}
        )
    return created.execution.execution_id


def _claimed_by_another(now: datetime) -> list[dict[str, Any]]:
    return [
        {"status": TaskStatus.QUEUED.value, "at": now, "message": "enqueued"},
        {"status": TaskStatus.PROCESSING.value, "at": now, "message": "claimed", "worker": "w-old"},
    ]


def _request(task_id: str, execution_id: str, worker: str = "w-new") -> ClaimRequest:
    return ClaimRequest(
        execution_id,
        worker,
        lease=30.0,
        timeout=300.0,
        default_max_retries=3,
        task_id=task_id,
        queue="claims-q",
    )


async def test_a_batch_of_encoded_claims_takes_what_is_claimable_and_nothing_else(
    server_store: None,
) -> None:
    # Given: through the real client, a queued execution, one held under a live lease and
    # one whose holder's lease ran out
    now = utcnow()
    queued = await _execution("t:queued")
    live = await _execution(
        "t:live",
        status=TaskStatus.PROCESSING.value,
        claimToken="held",
        claimedBy="w-old",
        leaseExpiresAt=now + timedelta(minutes=5),
        history=_claimed_by_another(now),
    )
    expired = await _execution(
        "t:expired",
        status=TaskStatus.PROCESSING.value,
        claimToken="held",
        claimedBy="w-old",
        leaseExpiresAt=now - timedelta(minutes=5),
        history=_claimed_by_another(now),
    )
    # When: claimed in one batch
    claims = await claim_many(
        [_request("t:queued", queued), _request("t:live", live), _request("t:expired", expired)]
    )
    # Then: the queued and the expired one are won under each claim's own token, with the
    # consumer's settings; the live one is refused and untouched
    won_queued, refused, taken_over = claims
    assert not isinstance(won_queued, Exception)
    assert not isinstance(refused, Exception)
    assert not isinstance(taken_over, Exception)
    assert won_queued.won
    assert taken_over.won
    assert not refused.won
    assert won_queued.token != taken_over.token
    assert taken_over.taken_over
    assert not won_queued.taken_over
    for claim in (won_queued, taken_over):
        document = claim.document
        assert document is not None
        assert document["claimToken"] == claim.token
        assert document["claimedBy"] == "w-new"
        assert document["status"] == TaskStatus.PROCESSING.value
        assert document["timeoutSeconds"] == 300.0
        assert document["maxRetries"] == 3
        lease = document["leaseExpiresAt"] - document["processingStartedAt"]
        assert lease == timedelta(seconds=30)
        assert document["history"][-1]["worker"] == "w-new"
    assert refused.document is not None
    assert refused.document["claimToken"] == "held"
    assert refused.document["claimedBy"] == "w-old"


async def _fail_next_update(data: dict[str, Any]) -> Any:
    client = connection.collection().database.client
    await client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["update"], **data},
    )
    await client.admin.command("standinReset")
    return client


async def _commands(client: Any) -> dict[str, int]:
    return dict((await client.admin.command("standinStats"))["commands"])


async def test_an_encoded_batch_retried_by_the_client_claims_each_execution_once(
    server_store: None,
) -> None:
    # Given: three queued executions, and the next update failing as a server stepping down
    executions = [(f"t:retried-{n}", await _execution(f"t:retried-{n}")) for n in range(3)]
    client = await _fail_next_update({"errorCode": 91, "errorLabels": ["RetryableWriteError"]})
    # When: claimed in one batch, which the client sends again with the same bytes
    claims = await claim_many([_request(task, execution) for task, execution in executions])
    # Then: each is won under its own token, by the one retried write
    assert (await _commands(client))["update"] == 2
    for claim in claims:
        assert not isinstance(claim, Exception)
        assert claim.won
        assert claim.document is not None
        assert claim.document["claimToken"] == claim.token
        assert [entry["message"] for entry in claim.document["history"]] == [
            "enqueued",
            "claimed",
        ]


async def test_an_encoded_batch_refused_whole_falls_back_to_claims_one_by_one(
    server_store: None,
) -> None:
    # Given: three queued executions, and the next update refused for good
    executions = [(f"t:refused-{n}", await _execution(f"t:refused-{n}")) for n in range(3)]
    client = await _fail_next_update({"errorCode": 2})
    # When
    claims = await claim_many([_request(task, execution) for task, execution in executions])
    # Then: nothing of the batch was applied, and each claim alone won
    sent = await _commands(client)
    assert sent["update"] == 1
    assert sent["findAndModify"] == 3
    for claim in claims:
        assert not isinstance(claim, Exception)
        assert claim.won
        assert claim.document is not None
        assert claim.document["claimToken"] == claim.token
