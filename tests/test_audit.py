"""The audit log, its pages and cursors, redaction, and the actors that act."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect

from tests.conftest import needs_in_memory
from tracker.clock import utcnow
from tracker.operations import audit, pages
from tracker.operations.actors import Actor, cli_actor
from tracker.operations.redaction import REDACTED, redact
from tracker.store import connection
from tracker.store.operator_records import AUDIT
from tracker.testing import store_failure, store_outage

ANA = Actor("ana", "operator", "cli")
BEN = Actor("ben", "operator", "api")


@pytest.mark.usefixtures("store")
async def test_entries_come_back_newest_first_and_filtered() -> None:
    # Given: three actions by two actors, a second apart
    now = utcnow()
    first = await audit.record(ANA, "archive", "execution:e1", reason="old", result={"archived": 1})
    second = await audit.record(BEN, "group.mute", "group:g1")
    await audit.record(ANA, "purge", "archived", selection={"olderThan": 30})
    for entry, age in ((first, 2), (second, 1)):
        await _move(entry.id, now - timedelta(seconds=age))
    # When
    everything = await audit.entries()
    by_ana = await audit.entries(actor="ana")
    mutes = await audit.entries(action="group.mute")
    on_e1 = await audit.entries(target="execution:e1")
    # Then
    assert [e.action for e in everything.items] == ["purge", "group.mute", "archive"]
    assert everything.next_cursor is None
    assert [e.action for e in by_ana.items] == ["purge", "archive"]
    assert [(e.actor, e.via, e.role) for e in mutes.items] == [("ben", "api", "operator")]
    assert on_e1.items[0].reason == "old"
    assert on_e1.items[0].result == {"archived": 1}


@pytest.mark.usefixtures("store")
async def test_time_bounds_select_a_window() -> None:
    # Given: entries an hour apart
    now = utcnow()
    for hours in (3, 2, 1):
        await _entry_at(now - timedelta(hours=hours), f"t{hours}")
    # When
    window = await audit.entries(since=now - timedelta(hours=2, minutes=30), until=now)
    # Then
    assert [e.target for e in window.items] == ["t1", "t2"]


@pytest.mark.usefixtures("store")
async def test_pages_neither_skip_nor_repeat_entries_that_share_a_time() -> None:
    # Given: seven entries, five of them written at the same millisecond
    now = utcnow()
    for n in range(5):
        await _entry_at(now, f"same{n}")
    await _entry_at(now - timedelta(seconds=1), "older")
    await _entry_at(now + timedelta(seconds=1), "newer")
    # When: read two at a time
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await audit.entries(cursor=cursor, limit=2)
        seen += [e.target for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    # Then
    assert sorted(seen) == sorted(["newer", "older", *(f"same{n}" for n in range(5))])
    assert len(seen) == 7
    assert seen[0] == "newer"
    assert seen[-1] == "older"


@pytest.mark.usefixtures("store")
async def test_a_cursor_of_another_query_is_refused() -> None:
    # Given: a cursor of the unfiltered list
    for n in range(3):
        await audit.record(ANA, "archive", f"t{n}")
    page = await audit.entries(limit=1)
    assert page.next_cursor is not None
    # When / Then
    with pytest.raises(ValueError, match="another query"):
        await audit.entries(actor="ana", cursor=page.next_cursor, limit=1)
    with pytest.raises(ValueError, match="limit"):
        await audit.entries(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await audit.entries(limit=501)


@pytest.mark.usefixtures("store")
async def test_hostile_filters_are_refused_before_any_query() -> None:
    for hostile in ({"$ne": None}, ["ana"], 7):
        with pytest.raises(TypeError):
            await audit.entries(actor=hostile)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control characters"):
        await audit.entries(action="\x1b[2J")
    with pytest.raises(TypeError):
        await audit.entries(since="yesterday")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_text_as_a_cursor_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        pages.decode(text, "binding", "date")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"q": st.just("binding"), "v": JSON, "x": JSON}), st.booleans())
def test_a_forged_cursor_decodes_to_safe_values_or_is_refused(
    payload: dict[str, Any], as_int: bool
) -> None:
    # Given: well-formed JSON in the cursor's envelope, with anything inside
    cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    # When
    try:
        value, ids = pages.decode(cursor, "binding", "int" if as_int else "date")
    except ValueError:
        return
    # Then: what it decodes to can never be a query operator
    assert not isinstance(value, dict | list)
    assert all(not isinstance(i, dict | list) for i in ids)


@pytest.mark.usefixtures("store")
async def test_selection_and_result_are_stored_redacted_and_bounded() -> None:
    # Given
    fields = frozenset({"email", "Card"})
    selection = {"payload": {"EMAIL": "a@b.c", "items": [{"card": "4111"}, {"n": 1}]}}
    # When
    entry = await audit.record(
        ANA,
        "edit_retry",
        "execution:e1",
        selection=selection,
        result={"huge": "x" * (audit.MAX_DETAIL_BYTES + 1)},
        redact_fields=fields,
    )
    # Then
    stored = await connection.database()[AUDIT].find_one({"_id": entry.id})
    assert stored is not None
    assert stored["selection"] == {
        "payload": {"EMAIL": REDACTED, "items": [{"card": REDACTED}, {"n": 1}]}
    }
    assert "over the" in stored["result"]["omitted"]
    assert selection["payload"]["EMAIL"] == "a@b.c"  # the caller's value is untouched


@pytest.mark.usefixtures("store")
async def test_times_in_a_selection_are_stored_in_the_apis_one_width() -> None:
    # Given: a replay's selection, one bound at a whole second, one naive (MongoDB's UTC)
    whole = datetime(2026, 11, 29, 22, 9, 29, tzinfo=UTC)
    selection = {"since": whole, "until": datetime(2026, 11, 29, 23, 0, 0, 61000)}
    # When
    entry = await audit.record(ANA, "replay.start", "replay:r1", selection=selection)
    # Then: as the API writes every other time, so they sort as text beside them
    stored = await connection.database()[AUDIT].find_one({"_id": entry.id})
    assert stored is not None
    assert stored["selection"] == {
        "since": "2026-11-29T22:09:29.000Z",
        "until": "2026-11-29T23:00:00.061Z",
    }


@pytest.mark.usefixtures("store")
async def test_an_audited_action_is_written_before_it_runs_and_completed_after() -> None:
    # Given / When: an action that succeeds, and one that fails
    async with audit.audited(ANA, "archive", "execution:ok", reason="done") as outcome:
        during = await audit.entries(target="execution:ok")
        outcome.result["archived"] = 1
    with pytest.raises(RuntimeError, match="broker gone"):
        async with audit.audited(ANA, "retry", "execution:bad"):
            raise RuntimeError("broker gone\nsecond line")
    # Then
    assert during.items[0].result == {"outcome": "started"}
    ok = (await audit.entries(target="execution:ok")).items[0]
    bad = (await audit.entries(target="execution:bad")).items[0]
    assert ok.result == {"outcome": "done", "archived": 1}
    assert bad.result == {"outcome": "error", "error": "RuntimeError: broker gone"}


@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_no_action_runs_when_its_entry_cannot_be_written() -> None:
    # Given: MongoDB unreachable
    ran = False
    # When
    with store_outage(), pytest.raises(AutoReconnect):
        async with audit.audited(ANA, "purge", "archived"):
            ran = True
    # Then
    assert not ran


@needs_in_memory
@pytest.mark.usefixtures("store")
async def test_an_action_done_while_its_completion_cannot_be_written_stays_done() -> None:
    # Given: the completing update fails once
    # When
    with store_failure(AutoReconnect("gone"), methods=["update_one"], times=1):
        async with audit.audited(ANA, "archive", "execution:x") as outcome:
            outcome.result["archived"] = 1
    # Then: the entry says the action started; no error reached the caller
    entry = (await audit.entries(target="execution:x")).items[0]
    assert entry.result == {"outcome": "started"}


@pytest.mark.usefixtures("store")
async def test_a_bad_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        await audit.record(ANA, "drop_database", "x")
    with pytest.raises(TypeError):
        await audit.record("ana", "archive", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        await audit.record(ANA, "archive", "")


def test_actors_are_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        Actor("ana", "admin", "cli")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control characters"):
        Actor("\x1b[2J", "operator", "cli")
    with pytest.raises(ValueError, match="via"):
        Actor("ana", "operator", "telnet")
    with pytest.raises(PermissionError):
        Actor("viv", "viewer", "api").require_operator()
    Actor("ana", "operator", "api").require_operator()


def test_the_cli_actor_is_named_by_the_setting_then_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKER_ACTOR", "deploy-bot")
    assert cli_actor() == Actor("deploy-bot", "operator", "cli")
    assert cli_actor("ana").name == "ana"
    monkeypatch.delenv("TRACKER_ACTOR")
    assert cli_actor().name


NESTED = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["email", "EMAIL", "card", "n", "x"]), inner, max_size=4)
    ),
    max_leaves=30,
)


def _values_under(value: Any, names: set[str]) -> list[Any]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.lower() in names:
                found.append(item)
            found += _values_under(item, names)
    elif isinstance(value, list):
        for item in value:
            found += _values_under(item, names)
    return found


@settings(max_examples=200, deadline=None)
@given(NESTED)
def test_redaction_leaves_no_named_value_and_changes_nothing_else(value: Any) -> None:
    # Given
    before = json.dumps(value, sort_keys=True)
    # When
    redacted = redact(value, frozenset({"Email", "card"}))
    # Then
    assert json.dumps(value, sort_keys=True) == before
    assert all(v == REDACTED for v in _values_under(redacted, {"email", "card"}))
    assert redact(value, frozenset()) is value


def test_redaction_survives_a_payload_nested_beyond_the_stack() -> None:
    deep: Any = {"email": "a"}
    for _ in range(5000):
        deep = {"x": [deep]}
    redacted = redact(deep, frozenset({"email"}))
    for _ in range(5000):
        redacted = redacted["x"][0]
    assert redacted == {"email": REDACTED}


async def _entry_at(at: Any, target: str) -> None:
    entry = await audit.record(ANA, "archive", target)
    await _move(entry.id, at)


async def _move(entry_id: str, at: Any) -> None:
    await connection.database()[AUDIT].update_one({"_id": entry_id}, {"$set": {"at": at}})
