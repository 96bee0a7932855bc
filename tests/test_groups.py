"""Failure groups: one per cause, kept as dead letters arrive; open -> resolved ->
regressed, muted beside; audited actions; the gauge and the alerting groups."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockCollection
from pymongo.errors import AutoReconnect

from tests.conftest import needs_in_memory
from tests.index_shapes import Query, recorded, unserved
from tracker import TaskStatus, claim, create_execution
from tracker.clock import utcnow
from tracker.consumer import QueueRules
from tracker.delivery.envelope import Envelope, InvalidMessage
from tracker.delivery.outcomes import Outcomes
from tracker.delivery.rejection import Rejections
from tracker.errors import ConflictError, NotFoundError
from tracker.models import INDEXES, TaskTracker
from tracker.observability import QueueStatsCollector, TrackerMetrics
from tracker.operations import audit, group_upkeep, groups
from tracker.operations.actors import Actor
from tracker.store import connection, operator_records
from tracker.store.executions import archive
from tracker.store.operator_records import GROUPS
from tracker.testing import capture_logs

__all__ = ["recorded"]
ANA = Actor("ana", "operator", "cli")


async def _dead_letter(task_id: str, queue: str = "reports", timeout: float = 60) -> TaskTracker:
    """A dead letter recorded the way a worker records one: its attempt outlived its
    timeout and had no retry left."""
    created = await create_execution(task_id, queue, {"n": 1}, max_retries=0)
    execution_id = created.execution.execution_id
    won = await claim(execution_id, worker="w", lease=60)
    outcomes = Outcomes(QueueRules(queue=queue, timeout=timeout, max_retries=0), "w")
    decision = await outcomes.expire(execution_id, won.token)
    assert decision is not None
    assert decision.outcome == "dead_lettered"
    found = await TaskTracker.find_execution(execution_id)
    assert found is not None
    return found


def test_messages_that_differ_only_in_values_share_a_group() -> None:
    same = [
        "order 123 of 'anna' failed at 0x7f3a9c2e10",
        "order 98 of 'bob' failed at 0x11aa22bb33",
        'order 4.5 of "carl" failed at 0xdeadbeef01',
    ]
    ids = {groups.group_id("reports", "validation", "ValueError", m) for m in same}
    assert len(ids) == 1
    assert groups.signature(same[0]) == "order <n> of <value> failed at <id>"
    others = {
        groups.group_id("emails", "validation", "ValueError", same[0]),
        groups.group_id("reports", "processing", "ValueError", same[0]),
        groups.group_id("reports", "validation", "KeyError", same[0]),
        groups.group_id("reports", "validation", "ValueError", "another message"),
    }
    assert len(others | ids) == 5


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=50), st.none() | st.text(max_size=20), st.text(max_size=3000))
def test_any_cause_has_a_short_stable_id(queue: str, error_type: str | None, message: str) -> None:
    gid = groups.group_id(queue or "q", "unknown", error_type, message)
    assert len(gid) == 16
    assert int(gid, 16) >= 0
    assert gid == groups.group_id(queue or "q", "unknown", error_type, message)
    assert len(groups.signature(message)) <= groups.MAX_SIGNATURE_CHARS


@pytest.mark.usefixtures("store")
async def test_a_dead_letter_carries_its_group_which_counts_it() -> None:
    # Given / When: two dead letters of one cause
    first = await _dead_letter("t:1")
    second = await _dead_letter("t:2")
    # Then
    assert first.group_id is not None
    assert first.group_id == second.group_id
    group = await groups.get_group(first.group_id)
    assert (group.state, group.muted, group.count) == ("open", False, 2)
    cause = (group.queue, group.category, group.error_type)
    assert cause == ("reports", "infrastructure", "TaskTimeout")
    assert group.first_seen <= group.last_seen
    assert group.sample_execution_id == second.execution_id
    assert group.sample_message == "timed out after 60 seconds"


@pytest.mark.usefixtures("store")
async def test_a_rejected_delivery_is_grouped_too() -> None:
    # Given / When: two deliveries that are not JSON
    rejections = Rejections("reports")
    for n in range(2):
        envelope = Envelope("reports", b"not json", message_id=f"m-{n}")
        await rejections.reject(envelope, InvalidMessage(f"body is not JSON: char {n}"))
    # Then
    [group] = (await groups.list_groups()).items
    assert (group.count, group.error_type, group.category) == (2, "InvalidMessage", "validation")
    assert group.signature == "body is not JSON: char <n>"


@pytest.mark.usefixtures("store")
async def test_resolved_then_regressed_by_a_new_dead_letter() -> None:
    # Given: a resolved group
    gid = (await _dead_letter("t:1")).group_id or ""
    resolved = await groups.resolve(gid, ANA, "fixed in 1.4.2")
    assert (resolved.state, resolved.resolved_by) == ("resolved", "ana")
    # When
    await _dead_letter("t:2")
    # Then
    group = await groups.get_group(gid)
    assert (group.state, group.count) == ("regressed", 2)
    stored = await connection.database()[GROUPS].find_one({"_id": gid})
    assert stored is not None
    assert stored["expiresAt"] is None  # a regressed group is kept
    with pytest.raises(ConflictError):
        await groups.resolve((await groups.resolve(gid, ANA)).id, ANA)


@pytest.mark.usefixtures("store")
async def test_operator_actions_are_audited_and_checked() -> None:
    # Given
    gid = (await _dead_letter("t:1")).group_id or ""
    # When
    muted = await groups.mute(gid, ANA, "known: the partner is down")
    again = await groups.mute(gid, ANA)
    unmuted = await groups.unmute(gid, ANA)
    # Then
    assert (muted.muted, again.muted, unmuted.muted) == (True, True, False)
    entries = (await audit.entries(target=f"group:{gid}")).items
    assert sorted((e.action, e.result["changed"], e.reason) for e in entries if e.result) == [
        ("group.mute", False, None),
        ("group.mute", True, "known: the partner is down"),
        ("group.unmute", True, None),
    ]
    with pytest.raises(NotFoundError):
        await groups.mute("0123456789abcdef", ANA)
    with pytest.raises(PermissionError):
        await groups.resolve(gid, Actor("viv", "viewer", "api"))
    with pytest.raises(TypeError):
        await groups.get_group({"$ne": None})  # type: ignore[arg-type]
    assert (await groups.get_group(gid)).state == "open"


@pytest.mark.usefixtures("store")
async def test_a_message_that_reads_as_an_operator_is_stored_as_text() -> None:
    # Given / When
    gid = await groups.note_dead_letter("reports", "validation", "$type", "$where: 1", "e-1")
    # Then
    group = await groups.get_group(gid)
    assert (group.sample_message, group.error_type) == ("$where: 1", "$type")


@pytest.mark.usefixtures("store")
async def test_a_group_resolves_itself_once_none_of_its_dead_letters_is_left() -> None:
    # Given: a group of two dead letters
    first = await _dead_letter("t:1")
    second = await _dead_letter("t:2")
    gid = first.group_id or ""
    # When: one is archived, then the other
    await archive(first.execution_id, reason="r", archived_by="ana")
    assert await groups.settle([gid]) == []
    await archive(second.execution_id, reason="r", archived_by="ana")
    resolved = await groups.settle([gid, gid])
    # Then
    assert resolved == [gid]
    group = await groups.get_group(gid)
    assert (group.state, group.resolved_by) == ("resolved", "tracker")
    [entry] = (await audit.entries(target=f"group:{gid}")).items
    assert (entry.actor, entry.via, entry.result) == ("tracker", "service", {"automatic": True})


@pytest.mark.usefixtures("store")
async def test_a_dead_letter_arriving_while_a_group_settles_keeps_it_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: a group whose only dead letter was archived
    first = await _dead_letter("t:1")
    gid = first.group_id or ""
    await archive(first.execution_id, reason="r", archived_by="ana")
    counted = groups.dead_letters_left

    async def meanwhile(group_id: str) -> int:
        # When: between counting and resolving, a new dead letter of the cause arrives
        left = await counted(group_id)
        await _dead_letter("t:2")
        return left

    monkeypatch.setattr(groups, "dead_letters_left", meanwhile)
    resolved = await groups.settle([gid])
    # Then: not resolved over a live dead letter
    assert resolved == []
    assert (await groups.get_group(gid)).state == "open"


@pytest.mark.usefixtures("store")
async def test_mute_while_dead_letters_arrive_loses_neither() -> None:
    # Given
    gid = (await _dead_letter("t:0")).group_id or ""
    # When: eight dead letters of the cause and a mute, interleaved
    await asyncio.gather(
        *(_dead_letter(f"t:{n}") for n in range(1, 9)), groups.mute(gid, ANA, "noisy")
    )
    # Then
    group = await groups.get_group(gid)
    assert (group.muted, group.count, group.state) == (True, 9, "open")


@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_a_store_error_while_noting_leaves_the_dead_letter_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: the group's upsert fails
    original = AsyncMongoMockCollection.update_one

    def update_one(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == GROUPS:
            raise AutoReconnect("gone")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMongoMockCollection, "update_one", update_one)
    with capture_logs() as logs:
        # When
        dead = await _dead_letter("t:1")
    monkeypatch.undo()
    # Then: the dead letter and its group id are stored; the miss is logged
    assert dead.status is TaskStatus.DLQ
    assert dead.group_id is not None
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert "failure group not updated" in warnings
    with pytest.raises(NotFoundError):
        await groups.get_group(dead.group_id)
    await _dead_letter("t:2")
    assert (await groups.get_group(dead.group_id)).count == 1


@pytest.mark.usefixtures("store")
async def test_lists_filter_and_page_most_recent_first() -> None:
    # Given: three causes on two queues, one muted, one resolved
    ids = []
    for n, queue in enumerate(("reports", "reports", "emails")):
        ids.append(await groups.note_dead_letter(queue, "validation", f"E{n}", "m", f"e-{n}"))
        await asyncio.sleep(0.002)
    await groups.mute(ids[0], ANA)
    await groups.resolve(ids[1], ANA)
    # When / Then
    assert [g.id for g in (await groups.list_groups()).items] == ids[::-1]
    assert [g.id for g in (await groups.list_groups(queue="reports")).items] == ids[1::-1]
    assert [g.id for g in (await groups.list_groups(muted=True)).items] == [ids[0]]
    assert [g.id for g in (await groups.list_groups(state="resolved")).items] == [ids[1]]
    unmuted = await groups.list_groups(queue="reports", muted=False)
    assert [g.id for g in unmuted.items] == [ids[1]]
    first = await groups.list_groups(limit=2)
    assert first.next_cursor is not None
    rest = await groups.list_groups(limit=2, cursor=first.next_cursor)
    assert [g.id for g in (*first.items, *rest.items)] == ids[::-1]
    with pytest.raises(ValueError, match="state"):
        await groups.list_groups(state="closed")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await groups.list_groups(muted="yes")  # type: ignore[arg-type]


@pytest.mark.usefixtures("store")
async def test_the_gauge_counts_groups_and_names_the_alerting_ones() -> None:
    # Given: a new group, a regressed one, a muted new one, and one first seen long ago
    new = await groups.note_dead_letter("reports", "validation", "A", "m", "e-1")
    back = await groups.note_dead_letter("reports", "validation", "B", "m", "e-2")
    await groups.resolve(back, ANA)
    await groups.note_dead_letter("reports", "validation", "B", "m", "e-3")
    quiet = await groups.note_dead_letter("reports", "validation", "C", "m", "e-4")
    await groups.mute(quiet, ANA)
    long_ago = utcnow() - timedelta(days=2)
    await groups.note_dead_letter("emails", "validation", "D", "m", "e-5", long_ago)
    metrics = TrackerMetrics()
    # When
    assert await QueueStatsCollector(metrics, {}).refresh()

    # Then
    def value(name: str, **labels: str) -> Any:
        return metrics.registry.get_sample_value(name, labels)

    assert value("tracker_failure_groups", state="open", muted="false") == 2
    assert value("tracker_failure_groups", state="open", muted="true") == 1
    assert value("tracker_failure_groups", state="regressed", muted="false") == 1
    assert value("tracker_failure_groups", state="resolved", muted="false") == 0
    alerting = {
        (s.labels["group"], s.labels["state"])
        for s in metrics.failure_group_alerting.collect()[0].samples
    }
    assert alerting == {(new, "open"), (back, "regressed")}
    # When: the regressed group is muted, its series goes at the next refresh
    await groups.mute(back, ANA)
    await QueueStatsCollector(metrics, {}).refresh()
    assert {s.labels["group"] for s in metrics.failure_group_alerting.collect()[0].samples} == {new}


@pytest.mark.usefixtures("store")
async def test_backfill_groups_dead_letters_recorded_before_groups() -> None:
    # Given: a dead letter with no group (an older version, or another writer)
    dead = await _dead_letter("t:1")
    await connection.collection().update_one(
        {"executionId": dead.execution_id}, {"$unset": {"groupId": ""}}
    )
    await connection.database()[GROUPS].delete_many({})
    # When
    given = await group_upkeep.backfill()
    again = await group_upkeep.backfill()
    # Then
    assert (given, again) == (1, 0)
    refreshed = await TaskTracker.find_execution(dead.execution_id)
    assert refreshed is not None
    assert refreshed.group_id == dead.group_id
    assert (await groups.get_group(dead.group_id or "")).count == 1


@pytest.mark.usefixtures("store")
async def test_every_group_query_is_served_by_an_index(recorded: list[Query]) -> None:
    # Given / When: every group operation, a second page included
    gid = (await _dead_letter("t:1")).group_id or ""
    await groups.note_dead_letter("emails", "validation", "E", "m", "e-2")
    for filters in ({}, {"queue": "reports"}, {"state": "open"}, {"muted": False}):
        page = await groups.list_groups(limit=1, **filters)  # type: ignore[arg-type]
        if page.next_cursor:
            await groups.list_groups(limit=1, cursor=page.next_cursor, **filters)  # type: ignore[arg-type]
    await groups.mute(gid, ANA)
    await groups.resolve(gid, ANA)
    await groups.settle([gid])
    await group_upkeep.backfill()
    await QueueStatsCollector(TrackerMetrics(), {}).refresh()
    # Then
    indexes = {GROUPS: operator_records.GROUP_INDEXES, connection.collection().name: INDEXES}
    assert {q.collection for q in recorded} >= {GROUPS, connection.collection().name}
    assert unserved(recorded, indexes) == []
