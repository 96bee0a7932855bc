"""The operations collections' indexes and retention, and the settings that shape them."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from click.testing import CliRunner

import tracker
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.constants import DEFAULT_AUDIT_RETENTION_SECONDS
from tracker.errors import ConfigurationError
from tracker.settings import Settings
from tracker.store import connection, operator_records
from tracker.store.operator_records import AUDIT, GROUPS, REPLAY_ITEMS, REPLAYS


@pytest.mark.usefixtures("store")
async def test_connecting_creates_every_index_of_the_operations_collections() -> None:
    # Given / When: a store connected (the in-memory one brings its indexes in step)
    database = connection.database()
    # Then
    for name, models in (
        (AUDIT, operator_records.audit_indexes()),
        (GROUPS, operator_records.GROUP_INDEXES),
        (REPLAYS, operator_records.REPLAY_INDEXES),
        (REPLAY_ITEMS, operator_records.REPLAY_ITEM_INDEXES),
    ):
        info = await database[name].index_information()
        assert {m.document["name"] for m in models} <= set(info), name
    audit = await database[AUDIT].index_information()
    assert audit["at_1"]["expireAfterSeconds"] == int(DEFAULT_AUDIT_RETENTION_SECONDS)
    items = await database[REPLAY_ITEMS].index_information()
    assert items["replayId_1_position_1"]["unique"]
    for name in (GROUPS, REPLAYS, REPLAY_ITEMS):
        info = await database[name].index_information()
        assert info["expiresAt_1"]["expireAfterSeconds"] == 0


@pytest.mark.usefixtures("store")
async def test_search_keys_are_indexed_and_found_again_by_their_index() -> None:
    # Given
    assert operator_records.search_keys_of(await connection.collection().index_information()) == (
        frozenset()
    )
    # When
    done = await connection.ensure_indexes(search_keys=("customer", "order_id"))
    again = await connection.ensure_indexes(search_keys=("customer",))
    # Then
    info = await connection.collection().index_information()
    assert "metadata.customer_1_enqueuedAt_-1" in done.create
    assert "metadata.customer_1_enqueuedAt_-1" not in again.create
    assert operator_records.search_keys_of(info) == {"customer", "order_id"}


def test_a_search_key_must_be_plain() -> None:
    for hostile in ("$where", "a.b", "", "x" * 65, "é", "a b", "1abc"):
        with pytest.raises(ValueError, match="search key"):
            operator_records.search_index(hostile)


def test_settings_read_search_keys_and_audit_retention() -> None:
    # Given / When
    settings = Settings.from_env(
        {
            "TRACKER_SEARCH_KEYS": " customer, order ,customer,",
            "TRACKER_AUDIT_RETENTION_DAYS": "400",
        }
    )
    # Then
    assert settings.search_keys == ("customer", "order")
    assert settings.audit_retention == 400 * 86400
    assert Settings().audit_retention == DEFAULT_AUDIT_RETENTION_SECONDS


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TRACKER_SEARCH_KEYS", "customer,$where", "not a search key"),
        ("TRACKER_SEARCH_KEYS", ",".join(f"k{n}" for n in range(9)), "at most 8"),
        ("TRACKER_AUDIT_RETENTION_DAYS", "30", "from 90"),
        ("TRACKER_AUDIT_RETENTION_DAYS", "1e9", "whole days"),
        ("TRACKER_AUDIT_RETENTION_DAYS", "-400", "whole days"),
    ],
)
def test_bad_settings_say_what_to_change(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({name: value})


def test_migrate_indexes_the_search_keys_and_groups_older_dead_letters() -> None:
    # Given: a dead letter recorded before failure groups existed
    database = f"tracker_migrate_{uuid.uuid4().hex[:8]}"

    async def seed() -> str:
        await tracker.connect(None, database)
        try:
            created = await tracker.create_execution("t:1", "reports", {}, max_retries=0)
            execution_id = created.execution.execution_id
            won = await tracker.claim(execution_id, worker="w", lease=60)
            await tracker.transition(
                execution_id,
                tracker.TaskStatus.DLQ,
                claim_token=won.token,
                fields={"errorCategory": "validation", "errorMessage": "bad 1"},
            )
            return execution_id
        finally:
            await tracker.disconnect()

    execution_id = asyncio.run(seed())
    state = CliState(Settings(search_keys=("customer",)), in_memory_database=database)
    # When
    result = CliRunner().invoke(main, ["migrate", "--json"], obj=state)
    # Then
    assert result.exit_code == 0, result.output
    assert "metadata.customer_1_enqueuedAt_-1" in json.loads(result.stdout)["create"]

    async def grouped() -> str | None:
        await tracker.connect(None, database)
        try:
            found = await tracker.TaskTracker.find_execution(execution_id)
            assert found is not None
            return found.group_id
        finally:
            await tracker.disconnect()

    assert asyncio.run(grouped()) is not None
