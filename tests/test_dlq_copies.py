"""Copies in `Q.dlq` never bring a dead letter back: `tracker dlq import` records only what
the broker dead-lettered before the tracker saw it, and only removes the copies of what the
tracker knows (recorded, archived, or archived and purged), whether an earlier version of
the tracker copied them there or the broker did. A queue that does not exist is one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

import aio_pika
import pytest
from click.testing import CliRunner, Result

from tests.conftest import AMQP_URL
from tests.service_harness import cli_state, on_store
from tracker import TaskStatus, TaskTracker, claim, create_execution, transition
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.clock import utcnow
from tracker.constants import HEADER_ERROR_CATEGORY, dlq_name
from tracker.delivery.envelope import encode_payload, task_message
from tracker.rabbit.topology import declare_topology, topology_queue_names
from tracker.retry import RetryPolicy
from tracker.settings import Settings
from tracker.store.executions import archive

T = TypeVar("T")


async def _dead_letter(queue: str, name: str) -> str:
    created = await create_execution(f"{queue}:{name}", queue, {"name": name})
    execution_id = created.execution.execution_id
    won = await claim(execution_id, worker="w", lease=60)
    await transition(execution_id, TaskStatus.DLQ, claim_token=won.token)
    return execution_id


@pytest.fixture
def queue(amqp_url: str) -> Iterator[str]:
    """A tracked queue's topology on the broker, deleted afterwards."""
    name = f"copies-{uuid.uuid4().hex[:8]}"

    async def topology(delete: bool) -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            if delete:
                for queue_name in topology_queue_names(name, RetryPolicy().tiers_ms):
                    await channel.queue_delete(queue_name)
            else:
                await declare_topology(channel, name, RetryPolicy().tiers_ms)

    asyncio.run(topology(False))
    yield name
    asyncio.run(topology(True))


async def _copy(queue: str, execution_id: str, task_id: str, headers: dict[str, Any]) -> None:
    """A copy of an execution's message in ``queue``'s ``.dlq``, with ``headers`` added."""
    message = task_message(
        queue, encode_payload({"copy": True}), task_id=task_id, execution_id=execution_id
    )
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers={**message.headers, **headers},
                message_id=message.message_id,
                correlation_id=message.correlation_id,
            ),
            routing_key=dlq_name(queue),
        )


async def _depth(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state)


@pytest.mark.rabbitmq
def test_import_never_revives_an_archived_or_purged_dead_letter(
    cli_backend: str, queue: str
) -> None:
    # Given: three dead letters, all archived, two of them long ago and then purged
    database = f"tracker_copies_{uuid.uuid4().hex[:8]}"

    async def seed() -> dict[str, str]:
        ids = {name: await _dead_letter(queue, name) for name in ("kept", "gone", "gone-too")}
        for execution_id in ids.values():
            await archive(execution_id, reason="known", archived_by="ana")
        long_ago = utcnow() - timedelta(days=40)
        await TaskTracker.get_pymongo_collection().update_many(
            {"executionId": {"$in": [ids["gone"], ids["gone-too"]]}},
            {"$set": {"updatedAt": long_ago}},
        )
        return ids

    ids = on_store(database, seed)
    state = cli_state(database, cli_backend, Settings(amqp_url=AMQP_URL))
    purged = cli(state, "dlq", "purge", "--archived-older-than", "30d", "--yes", "--json")
    assert json.loads(purged.stdout)["deleted"] == 2, purged.output
    # ...and in Q.dlq a copy of each: as an earlier tracker copied its dead letters, as the
    # broker dead-letters a message, and one message the tracker never saw
    copied = {HEADER_ERROR_CATEGORY: "processing"}
    by_broker = {"x-first-death-reason": "delivery_limit"}

    async def copies() -> None:
        await _copy(queue, ids["kept"], f"{queue}:kept", copied)
        await _copy(queue, ids["gone"], f"{queue}:gone", copied)
        await _copy(queue, ids["gone-too"], f"{queue}:gone-too", by_broker)
        await _copy(queue, "never-seen-1", f"{queue}:never-seen", by_broker)

    asyncio.run(copies())
    # When
    result = cli(state, "dlq", "import", "--queue", queue, "--yes", "--json")
    # Then: only the one never seen is recorded; every copy is gone from Q.dlq
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["queues"][queue]
    assert (counts["imported"], counts["already_tracked"], counts["invalid"]) == (1, 3, 0)
    assert asyncio.run(_depth(dlq_name(queue))) == 0

    async def after() -> dict[str, TaskStatus | None]:
        found = {}
        for name, execution_id in {**ids, "never-seen": "never-seen-1"}.items():
            doc = await TaskTracker.find_execution(execution_id)
            found[name] = None if doc is None else doc.status
        return found

    assert on_store(database, after) == {
        "kept": TaskStatus.ARCHIVED,
        "gone": None,
        "gone-too": None,
        "never-seen": TaskStatus.DLQ,
    }


@pytest.mark.rabbitmq
def test_importing_a_queue_that_does_not_exist_is_one_line(cli_backend: str, amqp_url: str) -> None:
    # Given
    state = cli_state(
        f"tracker_copies_{uuid.uuid4().hex[:8]}", cli_backend, Settings(amqp_url=amqp_url)
    )
    # When
    result = cli(state, "dlq", "import", "--queue", "nope-queue", "--yes")
    # Then
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line == (
        "Error: RabbitMQ has no queue 'nope-queue.dlq': is 'nope-queue' a tracked queue "
        "(`tracker stats` lists them)?"
    )


async def _raw(queue: str, body: bytes, **properties: Any) -> None:
    """A message in ``queue``'s ``.dlq`` exactly as given."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(body, **properties), routing_key=dlq_name(queue)
        )


@pytest.mark.rabbitmq
def test_hostile_copies_are_counted_recorded_once_and_never_stop_the_import(
    cli_backend: str, queue: str
) -> None:
    # Given: in Q.dlq, among one good message and one whose id reads like an operator (a
    # plain string to MongoDB), what no tracker could have written
    database = f"tracker_copies_{uuid.uuid4().hex[:8]}"
    good = task_message(
        queue, encode_payload({"n": 1}), task_id=f"{queue}:good", execution_id="good-1"
    )
    by_broker = {"x-first-death-reason": "delivery_limit"}

    async def seed() -> None:
        await _raw(
            queue,
            good.body,
            headers={**good.headers, "x-first-death-reason": 7},
            message_id=good.message_id,
            correlation_id=good.correlation_id,
        )
        await _raw(queue, b"{not json", headers=by_broker, message_id="bad-1")
        await _raw(queue, b"\xff\xfe", headers=by_broker)
        await _raw(queue, b'{"n": 1}', headers=by_broker, message_id="$where")
        await _raw(queue, b'{"n": 1}', headers=by_broker, message_id="bad\nid")
        await _raw(queue, b'{"n": 1}', headers={"x-retry-count": "1e30"}, message_id="ok-id")
        await _raw(queue, b"[" * 5000 + b"]" * 5000, message_id="deep")

    asyncio.run(seed())
    state = cli_state(database, cli_backend, Settings(amqp_url=AMQP_URL))
    # When: imported twice
    first = cli(state, "dlq", "import", "--queue", queue, "--yes", "--json")
    second = cli(state, "dlq", "import", "--queue", queue, "--yes", "--json")
    # Then: the good one imported, each bad one counted with its reason, the queue drained,
    # and nothing comes back the second time
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout)["queues"][queue]
    assert counts["imported"] == 2, counts
    assert counts["invalid"] == 5
    assert len(counts["reasons"]) == 5
    assert all(isinstance(reason, str) and reason for reason in counts["reasons"])
    assert asyncio.run(_depth(dlq_name(queue))) == 0
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)["queues"][queue]
    assert (again["imported"], again["invalid"]) == (0, 0)

    async def recorded() -> list[TaskTracker | None]:
        return [await TaskTracker.find_execution(e) for e in (good.message_id or "", "$where")]

    imported, operator_like = on_store(database, recorded)
    assert imported is not None
    assert operator_like is not None
    assert operator_like.execution_id == "$where"
    assert (imported.status, operator_like.status) == (TaskStatus.DLQ, TaskStatus.DLQ)
    assert imported.error_message == ("dead-lettered by RabbitMQ (7) before it could be tracked")
