"""Stuck means past its own deadline: `tracker stuck` lists the executions processing past
their stored `timeoutAt` (with their task ids), `--older-than` only narrows, `--fail`
records each one's own timeout, and the alert TrackerExecutionsStuck counts exactly what
the command it names lists. `find_stuck_tasks` and `is_stuck` keep their meaning."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from click.testing import CliRunner, Result

from tests.conftest import AMQP_URL
from tests.service_harness import cli_state, on_store
from tracker import TaskStatus, TaskTracker, claim, create_execution
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.clock import utcnow
from tracker.observability import QueueStatsCollector, TrackerMetrics
from tracker.rabbit.topology import declare_topology, topology_queue_names
from tracker.retry import RetryPolicy
from tracker.settings import Settings

T = TypeVar("T")
ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"


async def _processing(queue: str, name: str, started_ago: float, timeout: float | None) -> str:
    """An execution processing since ``started_ago`` seconds under ``timeout`` (None: written
    without a deadline, as another writer of the collection may)."""
    created = await create_execution(f"{queue}:{name}", queue, {"name": name})
    execution_id = created.execution.execution_id
    await claim(execution_id, worker="w-1", lease=600, timeout=timeout)
    started = utcnow() - timedelta(seconds=started_ago)
    moved: dict[str, Any] = {"processingStartedAt": started}
    moved["timeoutAt"] = None if timeout is None else started + timedelta(seconds=timeout)
    await TaskTracker.get_pymongo_collection().update_one(
        {"executionId": execution_id}, {"$set": moved}
    )
    return execution_id


@pytest.fixture
def seeded(cli_backend: str) -> tuple[CliState, str, dict[str, str]]:
    database = f"tracker_stuck_{uuid.uuid4().hex[:8]}"
    queue = f"stuck-{uuid.uuid4().hex[:8]}"

    async def seed() -> dict[str, str]:
        return {
            # 17 s into a 10 s timeout: stuck, though young
            "late": await _processing(queue, "late", 17, 10),
            # a minute into five: working
            "working": await _processing(queue, "working", 60, 300),
            # no deadline stored, 31 minutes in: stuck by the schema's default (30 min)
            "undated": await _processing(queue, "undated", 31 * 60, None),
            # no deadline stored, 10 minutes in: not yet
            "recent": await _processing(queue, "recent", 10 * 60, None),
            # another queue's
            "elsewhere": await _processing(f"{queue}-other", "elsewhere", 5, 1),
        }

    ids = on_store(database, seed)
    return cli_state(database, cli_backend, Settings(amqp_url=AMQP_URL)), queue, ids


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)


def listed(state: CliState, *args: str) -> list[str]:
    result = cli(state, "stuck", *args, "--json")
    assert result.exit_code == 0, result.output
    return [row["executionId"] for row in json.loads(result.stdout)["stuck"]]


def test_stuck_lists_what_is_past_its_own_deadline_with_its_task(
    seeded: tuple[CliState, str, dict[str, str]],
) -> None:
    # Given
    state, queue, ids = seeded
    # When
    data = json.loads(cli(state, "stuck", "--queue", queue, "--json").stdout)
    table = cli(state, "stuck", "--queue", queue).stdout
    # Then: longest first, each with its task, deadline and timeout
    assert [row["executionId"] for row in data["stuck"]] == [ids["undated"], ids["late"]]
    assert [row["taskId"] for row in data["stuck"]] == [f"{queue}:undated", f"{queue}:late"]
    late = data["stuck"][1]
    assert (late["timeoutSeconds"], late["claimedBy"]) == (10, "w-1")
    deadline = datetime.fromisoformat(late["timeoutAt"])
    assert deadline - datetime.fromisoformat(late["processingStartedAt"]) == timedelta(seconds=10)
    assert data["total"] == 2
    assert "TASK" in table
    assert "DEADLINE" in table
    assert f"{queue}:late" in table


def test_older_than_only_narrows(seeded: tuple[CliState, str, dict[str, str]]) -> None:
    state, queue, ids = seeded
    # the working one is older than a second, but not past its deadline: never listed
    assert listed(state, "--queue", queue, "--older-than", "1s") == [ids["undated"], ids["late"]]
    assert listed(state, "--queue", queue, "--older-than", "20m") == [ids["undated"]]
    assert listed(state, "--queue", queue, "--older-than", "1h") == []
    assert ids["elsewhere"] in listed(state)


def test_limit_shows_how_many_of_how_many(seeded: tuple[CliState, str, dict[str, str]]) -> None:
    state, queue, _ = seeded
    result = cli(state, "stuck", "--queue", queue, "--limit", "1")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "1 of 2 shown"


def test_the_alert_counts_what_the_command_it_names_lists(
    seeded: tuple[CliState, str, dict[str, str]],
) -> None:
    # Given: the gauge the alert reads, refreshed from the same data
    state, queue, _ = seeded
    metrics = TrackerMetrics()

    async def refresh() -> float | None:
        await QueueStatsCollector(metrics, {queue: 300.0}).refresh()
        return metrics.registry.get_sample_value("tracker_stuck_executions", {"queue": queue})

    gauge = on_store(state.in_memory_database or "", refresh)
    # When: the command the alert's description tells the operator to run
    [rule] = [
        rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "TrackerExecutionsStuck"
    ]
    assert "tracker_stuck_executions" in rule["expr"]
    advice = rule["annotations"]["description"].split("`")[1]
    args = advice.replace("{{ $labels.queue }}", queue).split()
    assert args[:2] == ["tracker", "stuck"]
    shown = listed(state, *args[2:])
    # Then
    assert gauge == len(shown) == 2


def test_find_stuck_tasks_and_is_stuck_keep_their_meaning(
    seeded: tuple[CliState, str, dict[str, str]],
) -> None:
    # Given / When: processing longer than 45 s, whatever the deadline
    state, queue, ids = seeded

    async def older_than_45s() -> tuple[list[str], bool, bool]:
        found = await TaskTracker.find_stuck_tasks(queue, 45)
        working = await TaskTracker.find_execution(ids["working"])
        late = await TaskTracker.find_execution(ids["late"])
        assert working is not None
        assert late is not None
        return [d.execution_id for d in found], working.is_stuck(45), late.is_stuck(45)

    found, working_stuck, late_stuck = on_store(state.in_memory_database or "", older_than_45s)
    # Then
    assert found == [ids["undated"], ids["recent"], ids["working"]]
    assert (working_stuck, late_stuck) == (True, False)


@pytest.mark.rabbitmq
def test_fail_records_each_execution_s_own_timeout(
    seeded: tuple[CliState, str, dict[str, str]], amqp_url: str
) -> None:
    # Given: the queue's topology, for the retries
    state, queue, ids = seeded

    async def topology(delete: bool) -> None:
        import aio_pika

        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in topology_queue_names(queue, RetryPolicy().tiers_ms):
                if delete:
                    await channel.queue_delete(name)
            if not delete:
                await declare_topology(channel, queue, RetryPolicy().tiers_ms)

    asyncio.run(topology(False))
    try:
        # When
        result = cli(state, "stuck", "--queue", queue, "--older-than", "1s", "--fail", "--yes",
                     "--json")  # fmt: skip
    finally:
        asyncio.run(topology(True))
    # Then: each failed as timed out after its own timeout, and retried
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["failed"]) == sorted([ids["late"], ids["undated"]])

    async def messages() -> dict[str, tuple[TaskStatus, str | None]]:
        docs = {name: await TaskTracker.find_execution(ids[name]) for name in ("late", "undated")}
        return {n: (d.status, d.error_message) for n, d in docs.items() if d is not None}

    assert on_store(state.in_memory_database or "", messages) == {
        "late": (TaskStatus.FAILED, "timed out after 10 seconds"),
        "undated": (TaskStatus.FAILED, "timed out after 1800 seconds"),
    }
