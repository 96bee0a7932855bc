"""The `tracker` command through click's runner, on the in-memory store seeded with a
realistic mix, and on the real broker where a command publishes; each test through both
backends of the command (MongoDB itself, and a service's HTTP API)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from click.testing import CliRunner, Result

import tracker
from tests.conftest import AMQP_URL
from tests.service_harness import OPERATOR, cli_state
from tracker import TaskStatus, TaskTracker, claim, create_execution, transition
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.clock import utcnow
from tracker.constants import dlq_name
from tracker.operations import group_upkeep
from tracker.rabbit.topology import declare_topology, topology_queue_names
from tracker.retry import RetryPolicy
from tracker.settings import Settings
from tracker.store.executions import archive

XLSX = ("validation", "ValueError", "format {!r} is not supported")


async def _attempt(
    task_id: str,
    queue: str,
    outcome: TaskStatus,
    *,
    error: tuple[str, str, str] | None = None,
    retry_count: int = 0,
    age: timedelta = timedelta(0),
    payload: Any = None,
    timeout: float | None = None,
) -> str:
    created = await create_execution(
        task_id, queue, payload or {"task": task_id}, retry_count=retry_count, max_retries=2
    )
    eid = created.execution.execution_id
    if outcome is TaskStatus.QUEUED:
        return eid
    won = await claim(eid, worker="seed", lease=600, timeout=timeout)
    fields: dict[str, Any] = {}
    if error:
        fields = {
            "errorCategory": error[0],
            "errorType": error[1],
            "errorMessage": error[2],
            "errorStack": f"Traceback (most recent call last):\n{error[1]}: {error[2]}",
        }
    if outcome is not TaskStatus.PROCESSING:
        target = TaskStatus.DLQ if outcome is TaskStatus.ARCHIVED else outcome
        await transition(eid, target, claim_token=won.token, fields=fields)
    if outcome is TaskStatus.ARCHIVED:
        await archive(eid, reason="seeded", archived_by="seed")
    if age:
        then = utcnow() - age
        moved: dict[str, Any] = {"enqueuedAt": then, "processingStartedAt": then, "updatedAt": then}
        if timeout is not None:
            moved["timeoutAt"] = then + timedelta(seconds=timeout)
        await TaskTracker.get_pymongo_collection().update_one({"executionId": eid}, {"$set": moved})
    return eid


async def _seed(database: str, queue: str, other: str) -> dict[str, Any]:
    await tracker.connect(None, database)
    ids: dict[str, Any] = {}
    await _attempt(f"{queue}:q1", queue, TaskStatus.QUEUED)
    await _attempt(f"{other}:q2", other, TaskStatus.QUEUED)
    await _attempt(f"{queue}:p1", queue, TaskStatus.PROCESSING)
    ids["stuck"] = await _attempt(
        f"{queue}:p2", queue, TaskStatus.PROCESSING, age=timedelta(hours=2), timeout=10
    )
    for n in range(3):
        await _attempt(f"{queue}:c{n}", queue, TaskStatus.COMPLETED)
    await _attempt(
        f"{queue}:chain", queue, TaskStatus.FAILED, error=("transient", "TimeoutError", "timed out")
    )
    await _attempt(f"{queue}:chain", queue, TaskStatus.COMPLETED, retry_count=1)
    ids["xlsx"] = []
    for n, fmt in enumerate(("xlsx", "docx", "pdf2")):
        ids["xlsx"].append(
            await _attempt(
                f"{queue}:fmt{n}",
                queue,
                TaskStatus.DLQ,
                error=(XLSX[0], XLSX[1], XLSX[2].format(fmt)),
            )
        )
    # the same task dead-lettered twice: a group retry must enqueue it once
    ids["xlsx"].append(
        await _attempt(
            f"{queue}:fmt0",
            queue,
            TaskStatus.DLQ,
            error=(XLSX[0], XLSX[1], XLSX[2].format("odt")),
            retry_count=1,
        )
    )
    ids["partner"] = [
        await _attempt(
            f"{queue}:partner{n}",
            queue,
            TaskStatus.DLQ,
            error=("partner_api", "PartnerAPIError", f"partner answered {500 + n}"),
        )
        for n in range(2)
    ]
    ids["old"] = await _attempt(
        f"{queue}:old",
        queue,
        TaskStatus.DLQ,
        error=("transient", "ConnectionError", "reset"),
        age=timedelta(days=8),
    )
    ids["email"] = await _attempt(
        f"{other}:bad",
        other,
        TaskStatus.DLQ,
        error=(
            "validation",
            "InvalidMessage",
            "body is not valid JSON: Expecting value (line 1 column 1)",
        ),
    )
    ids["archived_old"] = await _attempt(
        f"{queue}:a1", queue, TaskStatus.ARCHIVED, age=timedelta(days=40)
    )
    ids["archived_new"] = await _attempt(f"{queue}:a2", queue, TaskStatus.ARCHIVED)
    # Dead letters recorded without a failure group get theirs, as `tracker migrate` does.
    assert await group_upkeep.backfill() == 8
    await tracker.disconnect()
    return ids


@pytest.fixture
def seeded(cli_backend: str) -> tuple[CliState, str, str, dict[str, Any]]:
    database = f"tracker_cli_{uuid.uuid4().hex[:8]}"
    queue, other = f"cli-{uuid.uuid4().hex[:6]}", f"cli-mail-{uuid.uuid4().hex[:6]}"
    ids = asyncio.run(_seed(database, queue, other))
    return cli_state(database, cli_backend, Settings(amqp_url=AMQP_URL)), queue, other, ids


def through_service(state: CliState) -> bool:
    return state.service is not None


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def query(state: CliState, work: Any) -> Any:
    async def run() -> Any:
        await tracker.connect(None, state.in_memory_database or "")
        try:
            return await work()
        finally:
            await tracker.disconnect()

    return asyncio.run(run())


def status_of(state: CliState, execution_id: str) -> TaskTracker:
    doc = query(state, lambda: TaskTracker.find_execution(execution_id))
    assert doc is not None
    return doc


def test_status_shows_the_retry_chain(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, queue, _, _ = seeded
    data = as_json(cli(state, "status", f"{queue}:chain", "--json"))
    assert [(e["status"], e["retryCount"]) for e in data["executions"]] == [
        ("failed", 0),
        ("completed", 1),
    ]
    human = cli(state, "status", f"{queue}:chain")
    assert "now completed" in human.output
    assert "timed out" in human.output
    missing = cli(state, "status", "nope")
    assert missing.exit_code == 1
    assert missing.output == "Error: no task or execution matches 'nope'\n"


def test_stats_counts_every_status_per_queue(
    seeded: tuple[CliState, str, str, dict[str, Any]],
) -> None:
    state, queue, other, _ = seeded
    data = as_json(cli(state, "stats", "--json"))
    assert data[queue] == {
        "queued": 1,
        "processing": 2,
        "completed": 4,
        "failed": 1,
        "dlq": 7,
        "archived": 2,
    }
    assert data[other]["dlq"] == 1
    human = cli(state, "stats", "--queue", other)
    assert "QUEUED" in human.output
    assert other in human.output
    assert queue not in human.output


def test_dlq_list_filters_and_groups(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, _queue, other, ids = seeded
    assert len(as_json(cli(state, "dlq", "list", "--json"))) == 8
    assert {
        e["queueName"] for e in as_json(cli(state, "dlq", "list", "--queue", other, "--json"))
    } == {other}
    partner = as_json(cli(state, "dlq", "list", "--category", "partner_api", "--json"))
    assert sorted(e["executionId"] for e in partner) == sorted(ids["partner"])
    old = as_json(cli(state, "dlq", "list", "--older-than", "7d", "--json"))
    assert [e["executionId"] for e in old] == [ids["old"]]
    groups = as_json(cli(state, "groups", "list", "--json"))["items"]
    counts = sorted((g["count"], g["errorType"]) for g in groups)
    assert counts == [
        (1, "ConnectionError"),
        (1, "InvalidMessage"),
        (2, "PartnerAPIError"),
        (4, "ValueError"),
    ]
    xlsx = next(g for g in groups if g["errorType"] == "ValueError")
    assert xlsx["signature"] == "format <value> is not supported"
    assert (xlsx["state"], xlsx["muted"]) == ("open", False)
    assert xlsx["firstSeen"] <= xlsx["lastSeen"]
    by_group = as_json(cli(state, "dlq", "list", "--json"))
    assert sum(e["group"] == xlsx["id"] for e in by_group) == 4
    assert len(as_json(cli(state, "dlq", "list", "--group", xlsx["id"][:6], "--json"))) == 4


def test_dlq_show_prints_the_full_record(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, queue, _, ids = seeded
    record = as_json(cli(state, "dlq", "show", ids["partner"][0], "--json"))
    assert record["status"] == "dlq"
    assert record["payload"] == {"task": f"{queue}:partner0"}
    assert "PartnerAPIError" in record["errorStack"]
    human = cli(state, "dlq", "show", ids["partner"][0]).output
    assert "payload:" in human
    assert "stack:" in human
    assert "history:" in human
    assert cli(state, "dlq", "show", "nope").exit_code == 1


def test_dry_runs_change_nothing(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, queue, _, ids = seeded
    before = as_json(cli(state, "stats", "--json"))
    for args in (
        ["dlq", "retry", "--queue", queue, "--dry-run"],
        ["dlq", "archive", ids["old"], "--reason", "x", "--dry-run"],
        ["dlq", "auto-archive", "--older-than", "7d", "--dry-run"],
        ["dlq", "purge", "--archived-older-than", "30d", "--dry-run"],
        ["stuck", "--older-than", "1h", "--fail", "--dry-run"],
    ):
        result = cli(state, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "would" in result.output, args
    assert as_json(cli(state, "stats", "--json")) == before


def test_archive_auto_archive_and_purge(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, _, _, ids = seeded
    done = as_json(
        cli(
            state,
            "dlq",
            "archive",
            *ids["partner"],
            "--reason",
            "partner fixed",
            "--by",
            "ana",
            "--yes",
            "--json",
        )
    )
    assert [r["outcome"] for r in done["results"]] == ["archived", "archived"]
    archived = status_of(state, ids["partner"][0])
    assert (archived.status, archived.archived_reason, archived.archived_by) == (
        TaskStatus.ARCHIVED,
        "partner fixed",
        "ana",
    )
    auto = as_json(cli(state, "dlq", "auto-archive", "--older-than", "7d", "--yes", "--json"))
    assert [r["executionId"] for r in auto["results"]] == [ids["old"]]
    old = status_of(state, ids["old"])
    assert old.archived_reason == "Auto-archived after 7 days"
    # on MongoDB the command names itself; a service acts as the token's owner
    auto_name = OPERATOR.name if through_service(state) else "tracker-dlq-auto-archive@"
    assert (old.archived_by or "").startswith(auto_name)
    assert status_of(state, ids["email"]).status is TaskStatus.DLQ
    purged = as_json(cli(state, "dlq", "purge", "--archived-older-than", "30d", "--yes", "--json"))
    assert purged["deleted"] == 1
    assert query(state, lambda: TaskTracker.find_execution(ids["archived_old"])) is None
    assert status_of(state, ids["archived_new"]).status is TaskStatus.ARCHIVED
    # every one of these is in the audit log, with its result
    audited = as_json(cli(state, "audit", "--json"))["items"]
    by_action = {(e["action"], e["reason"]): e for e in audited}
    assert by_action["archive", "partner fixed"]["actor"] == "ana"
    assert by_action["archive", "partner fixed"]["result"]["archived"] == 2
    auto_by = by_action["archive", "Auto-archived after 7 days"]["actor"]
    assert auto_by.startswith(auto_name)
    assert by_action["purge", None]["result"]["deleted"] == 1
    # the partner group lost its last dead letter: it resolved itself
    partner = status_of(state, ids["partner"][1]).group_id or ""
    assert as_json(cli(state, "groups", "show", partner, "--json"))["state"] == "resolved"


def test_bad_usage_exits_two(seeded: tuple[CliState, str, str, dict[str, Any]]) -> None:
    state, queue, _, ids = seeded
    assert cli(state, "dlq", "retry").exit_code == 2  # no selection
    assert cli(state, "dlq", "retry", ids["old"], "--queue", queue).exit_code == 2
    assert cli(state, "dlq", "archive", ids["old"]).exit_code == 2  # --reason missing
    assert cli(state, "stuck", "--older-than", "soon").exit_code == 2
    unconfirmed = cli(state, "dlq", "archive", ids["old"], "--reason", "x")
    assert unconfirmed.exit_code == 2
    assert "--yes" in unconfirmed.output
    assert status_of(state, ids["old"]).status is TaskStatus.DLQ
    not_dead = cli(state, "dlq", "archive", ids["stuck"], "--reason", "x", "--yes")
    assert not_dead.exit_code == 1
    assert "not in the dead-letter queue" in not_dead.output


def test_without_a_service_or_mongodb_the_cli_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: neither a service nor a MongoDB named
    monkeypatch.delenv("TRACKER_MONGODB_URL", raising=False)
    monkeypatch.delenv("TRACKER_SERVICE_URL", raising=False)
    # When
    result = CliRunner().invoke(main, ["stats"])
    # Then: one line naming both ways
    assert result.exit_code == 2
    assert "--service http://127.0.0.1:9464" in result.output
    assert "TRACKER_SERVICE_URL" in result.output
    assert "TRACKER_MONGODB_URL=mongodb://" in result.output


@pytest.fixture
def declared(amqp_url: str, seeded: tuple[CliState, str, str, dict[str, Any]]) -> Iterator[str]:
    """The seeded queue's topology on the real broker, deleted afterwards."""
    queue = seeded[1]

    async def setup(delete: bool) -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            if delete:
                for name in topology_queue_names(queue, RetryPolicy().tiers_ms):
                    await channel.queue_delete(name)
            else:
                await declare_topology(channel, queue, RetryPolicy().tiers_ms)

    asyncio.run(setup(False))
    yield queue
    asyncio.run(setup(True))


async def _depth(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        return int((await underlay.queue_declare(queue, passive=True)).message_count or 0)


@pytest.mark.rabbitmq
def test_group_retry_enqueues_one_execution_per_task_and_publishes_it(
    seeded: tuple[CliState, str, str, dict[str, Any]], declared: str
) -> None:
    # Given: the xlsx group holds four entries of three tasks (fmt0 dead-lettered twice)
    state, queue, _, ids = seeded
    groups = as_json(cli(state, "groups", "list", "--json"))["items"]
    group = next(g["id"] for g in groups if g["errorType"] == "ValueError")
    # When
    result = cli(state, "dlq", "retry", "--group", group, "--by", "ana", "--yes", "--json")
    # Then: one new execution per task, published; every entry archived as retried by it
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.stdout)["results"]
    assert sorted(r["outcome"] for r in outcomes) == ["retried", "retried", "retried"]
    assert asyncio.run(_depth(queue)) == 3
    for eid in ids["xlsx"]:
        entry = status_of(state, eid)
        assert entry.status is TaskStatus.ARCHIVED
        assert entry.archived_reason == "Manual retry initiated"
        assert entry.archived_by == "ana"
        new = status_of(state, entry.next_execution_id or "")
        assert (new.status, new.task_id) == (TaskStatus.QUEUED, entry.task_id)
        assert new.retry_count > entry.retry_count
    chain = query(state, lambda: TaskTracker.find_retry_chain(f"{queue}:fmt1"))
    assert [d.status for d in chain] == [TaskStatus.ARCHIVED, TaskStatus.QUEUED]
    # and it was a replay job, audited under the operator's name
    audited = as_json(cli(state, "audit", "--action", "replay.start", "--json"))["items"]
    via = "api" if through_service(state) else "cli"
    assert [(e["actor"], e["via"], e["reason"]) for e in audited] == [
        ("ana", via, "Manual retry initiated")
    ]
    assert as_json(cli(state, "groups", "show", group, "--json"))["state"] == "resolved"


@pytest.mark.rabbitmq
def test_stuck_fail_retries_the_stuck_execution(
    seeded: tuple[CliState, str, str, dict[str, Any]], declared: str
) -> None:
    state, queue, _, ids = seeded
    listed = as_json(cli(state, "stuck", "--older-than", "1h", "--json"))
    assert [s["executionId"] for s in listed["stuck"]] == [ids["stuck"]]
    failed = as_json(cli(state, "stuck", "--older-than", "1h", "--fail", "--yes", "--json"))
    assert failed["failed"] == [ids["stuck"]]
    doc = status_of(state, ids["stuck"])
    assert doc.status is TaskStatus.FAILED
    # its own timeout, not the --older-than that found it
    assert doc.error_message == "timed out after 10 seconds"
    retry = status_of(state, doc.next_execution_id or "")
    assert retry.status is TaskStatus.QUEUED
    assert asyncio.run(_depth(f"{queue}.retry.1s")) + asyncio.run(_depth(queue)) == 1


@pytest.mark.rabbitmq
def test_import_records_untracked_dead_letters(
    seeded: tuple[CliState, str, str, dict[str, Any]], declared: str
) -> None:
    # Given: the broker dead-lettered a message that never got a record, beside a tracked copy
    state, queue, _, ids = seeded

    async def dead_letter() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for message_id, body in (("lost-1", b'{"n": 1}'), (ids["old"], b"{}")):
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=message_id,
                        correlation_id=f"{queue}:lost" if message_id == "lost-1" else None,
                        headers={"x-first-death-reason": "delivery_limit"},
                    ),
                    routing_key=dlq_name(queue),
                )

    asyncio.run(dead_letter())
    dry = as_json(cli(state, "dlq", "import", "--queue", queue, "--dry-run", "--json"))
    counts = {"imported": 1, "already_tracked": 1, "invalid": 0, "reasons": []}
    assert dry["queues"][queue] == counts
    # When
    done = as_json(cli(state, "dlq", "import", "--queue", queue, "--yes", "--json"))
    # Then
    assert done["queues"][queue] == counts
    lost = status_of(state, "lost-1")
    assert (lost.status, lost.task_id, lost.payload) == (TaskStatus.DLQ, f"{queue}:lost", {"n": 1})
    assert (
        lost.error_message
        == "dead-lettered by RabbitMQ (delivery_limit) before it could be tracked"
    )
    # every copy is settled: the tracked one removed too, so it cannot come back later
    assert asyncio.run(_depth(dlq_name(queue))) == 0
