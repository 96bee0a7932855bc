"""Edit and retry: a dead letter run again with a corrected payload, as a new execution
linked to it, the edit in the audit log; bad payloads refused before anything is written."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracker
from tests.dead_letters import Recorder, dead_letter
from tracker import TaskStatus, create_execution
from tracker.constants import MAX_PAYLOAD_BYTES
from tracker.delivery.envelope import OutgoingMessage
from tracker.errors import ConflictError, NotFoundError, PublishError
from tracker.models import TaskTracker
from tracker.operations import audit, groups
from tracker.operations.actors import Actor
from tracker.operations.edits import retry_with_payload
from tracker.store import connection

ANA = Actor("ana", "operator", "ui")


@pytest.mark.usefixtures("store")
async def test_an_edited_retry_is_a_new_execution_linked_to_its_dead_letter() -> None:
    # Given
    dead = await dead_letter("t:1", payload={"format": "xlsx", "card": "4111"})
    publish = Recorder()
    # When
    new = await retry_with_payload(
        dead.execution_id,
        {"format": "pdf", "card": "4111"},
        actor=ANA,
        reason="xlsx is not supported: pdf instead",
        publish=publish,
        redact_fields=frozenset({"card"}),
    )
    # Then: published with the edited payload, as the next attempt of the task
    assert (new.status, new.task_id, new.retry_count) == (TaskStatus.QUEUED, "t:1", 1)
    assert new.source_execution_id == dead.execution_id
    [message] = publish.messages
    assert message.message_id == new.execution_id
    assert json.loads(message.body) == {"format": "pdf", "card": "4111"}
    source = await TaskTracker.find_execution(dead.execution_id)
    assert source is not None
    assert (source.status, source.next_execution_id) == (TaskStatus.ARCHIVED, new.execution_id)
    assert (await groups.get_group(dead.group_id or "")).state == "resolved"
    # and the edit is in the audit log, redacted
    [entry] = (await audit.entries(action="edit_retry")).items
    assert (entry.actor, entry.via) == ("ana", "ui")
    assert entry.reason == "xlsx is not supported: pdf instead"
    assert entry.target == f"execution:{dead.execution_id}"
    assert entry.result is not None
    assert json.loads(entry.result["payload_before"]) == {"format": "xlsx", "card": "[redacted]"}
    assert json.loads(entry.result["payload_after"]) == {"format": "pdf", "card": "[redacted]"}
    assert entry.result["new_execution_id"] == new.execution_id


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (float("nan"), "not JSON"),
        ({"n": float("inf")}, "not JSON"),
        ({1, 2}, "not JSON"),
        ("x" * (MAX_PAYLOAD_BYTES + 1), "limit"),
        ({"n": 2**70}, "cannot be stored"),
        ("\ud800", "cannot be stored"),
    ],
    ids=["nan", "infinity", "set", "oversized", "beyond-64-bits", "lone-surrogate"],
)
@pytest.mark.usefixtures("store")
async def test_a_payload_that_cannot_run_is_refused_before_anything_is_written(
    payload: Any, message: str
) -> None:
    # Given
    dead = await dead_letter("t:1")
    # When / Then
    with pytest.raises(ValueError, match=message):
        await retry_with_payload(
            dead.execution_id, payload, actor=ANA, reason="fix", publish=Recorder()
        )
    assert (await audit.entries()).items == []
    assert len(await TaskTracker.find_retry_chain("t:1")) == 1


@pytest.mark.usefixtures("store")
async def test_a_payload_nested_beyond_the_store_is_refused() -> None:
    dead = await dead_letter("t:1")
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match=r"nested|not JSON"):
        await retry_with_payload(dead.execution_id, deep, actor=ANA, reason="x", publish=Recorder())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=15,
)


@settings(max_examples=40, deadline=None)
@given(JSON)
def test_any_payload_is_refused_or_published_as_given(payload: Any) -> None:
    async def attempt() -> tuple[str, Any]:
        await tracker.connect(None, "tracker_edits_hypothesis")
        try:
            dead = await dead_letter("t:h")
            publish = Recorder()
            try:
                await retry_with_payload(
                    dead.execution_id, payload, actor=ANA, reason="x", publish=publish
                )
            except ValueError as error:
                return "refused", str(error)
            return "published", json.loads(publish.messages[0].body)
        finally:
            await connection.database().client.drop_database("tracker_edits_hypothesis")
            await tracker.disconnect()

    # When
    outcome, detail = asyncio.run(attempt())
    # Then: what is published is exactly the payload given
    if outcome == "published":
        assert json.dumps(detail, sort_keys=True) == json.dumps(payload, sort_keys=True)
    else:
        assert detail


@pytest.mark.usefixtures("store")
async def test_only_a_dead_letter_of_an_idle_task_can_be_edited() -> None:
    # Given: a dead letter whose task is active again, and a completed execution
    dead = await dead_letter("t:1")
    await create_execution("t:1", "reports", {})
    # When / Then
    with pytest.raises(ConflictError, match="already has an active execution"):
        await retry_with_payload(dead.execution_id, {}, actor=ANA, reason="x", publish=Recorder())
    [entry] = (await audit.entries(action="edit_retry")).items
    assert entry.result is not None
    assert entry.result["outcome"] == "error"
    queued = await create_execution("t:2", "reports", {})
    with pytest.raises(ConflictError, match="only a dead letter"):
        await retry_with_payload(
            queued.execution.execution_id, {}, actor=ANA, reason="x", publish=Recorder()
        )
    with pytest.raises(NotFoundError):
        await retry_with_payload("nope", {}, actor=ANA, reason="x", publish=Recorder())
    with pytest.raises(TypeError):
        await retry_with_payload({"$ne": 1}, {}, actor=ANA, reason="x", publish=Recorder())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        await retry_with_payload(dead.execution_id, {}, actor=ANA, reason=" ", publish=Recorder())
    viewer = Actor("viv", "viewer", "api")
    with pytest.raises(PermissionError):
        await retry_with_payload(
            dead.execution_id, {}, actor=viewer, reason="x", publish=Recorder()
        )


@pytest.mark.usefixtures("store")
async def test_a_message_the_broker_refuses_leaves_the_dead_letter_as_it_was() -> None:
    # Given
    dead = await dead_letter("t:1")

    async def refuse(message: OutgoingMessage) -> None:
        raise PublishError("unroutable", maybe_published=False)

    # When
    with pytest.raises(PublishError):
        await retry_with_payload(dead.execution_id, {"n": 2}, actor=ANA, reason="x", publish=refuse)
    # Then: no new execution, the dead letter still there, the failure audited
    chain = await TaskTracker.find_retry_chain("t:1")
    assert [e.status for e in chain] == [TaskStatus.DLQ]
    [entry] = (await audit.entries(action="edit_retry")).items
    assert entry.result is not None
    assert entry.result["error"] == "PublishError: unroutable"


@pytest.mark.usefixtures("store")
async def test_a_lost_confirm_keeps_the_new_execution_for_the_sweeper() -> None:
    # Given: a broker that may have taken the message but did not confirm it
    dead = await dead_letter("t:1")
    published: list[OutgoingMessage] = []

    async def lose_the_confirm(message: OutgoingMessage) -> None:
        published.append(message)
        raise PublishError("the connection closed before the confirm arrived")

    # When
    new = await retry_with_payload(
        dead.execution_id, {"n": 2}, actor=ANA, reason="x", publish=lose_the_confirm
    )
    # Then: the new execution is kept, marked for the sweeper to publish again, the dead
    # letter archived, and the audit says it was not confirmed
    stored = await TaskTracker.find_execution(new.execution_id)
    assert stored is not None
    assert stored.status is TaskStatus.QUEUED
    assert stored.publish_unconfirmed_at is not None
    assert [m.message_id for m in published] == [new.execution_id]
    source = await TaskTracker.find_execution(dead.execution_id)
    assert source is not None
    assert source.status is TaskStatus.ARCHIVED
    [entry] = (await audit.entries(action="edit_retry")).items
    assert entry.result is not None
    assert entry.result["confirmed"] is False
