"""A replay run by the service itself, over the real broker: its worker republishes the
dead letters, consumes them again and the job follows them to their end."""

from __future__ import annotations

import asyncio

import pytest

import tracker
from tests.rabbit import FAST, Broker, wait_status
from tracker import TaskContext
from tracker.operations import groups, replays
from tracker.operations.actors import Actor
from tracker.operations.replays import ReplaySelection

pytestmark = [pytest.mark.rabbitmq, pytest.mark.usefixtures("store")]


async def test_the_service_runs_a_replay_to_its_end(broker: Broker) -> None:
    # Given: a consumer whose first attempts fail for good, and three dead letters
    queue = await broker.new_queue()

    @tracker.tracked(queue, retry_policy=FAST)
    async def handle(task: TaskContext) -> str:
        if task.retry_count == 0:
            raise tracker.ValidationError(f"order {task.payload['n']} is not valid yet")
        return "done"

    async with tracker.Worker([handle], broker.url, stats_interval=None) as worker:
        async with tracker.Publisher(broker.url) as publisher:
            for n in range(3):
                await publisher.enqueue(queue, {"n": n}, task_id=f"{queue}:{n}")
        for n in range(3):
            await wait_status(f"{queue}:{n}", "dlq")
        [group] = (await groups.list_groups(queue=queue)).items
        # When: an operator replays the group; the service's runner takes the job
        job = await replays.create_replay(
            ReplaySelection(group_id=group.id),
            actor=Actor("ana", "operator", "api"),
            reason="validation fixed",
            follow_seconds=60,
        )
        async with asyncio.timeout(30):
            while (seen := await replays.get_replay(job.id)).state != "completed":
                await asyncio.sleep(0.2)
        assert worker.replays.owner == worker.worker_id
    # Then
    assert (seen.matched, seen.succeeded, seen.failed, seen.skipped) == (3, 3, 0, 0)
    for n in range(3):
        chain = await wait_status(f"{queue}:{n}", "completed")
        assert [e.status.value for e in chain] == ["archived", "completed"]
    assert (await groups.get_group(group.id)).state == "resolved"
