"""A run on a three-node RabbitMQ cluster: workers and a publisher given all three nodes, the
node a worker is connected to stopped in the middle of the run. No task is lost, no handler
completes twice, and processing resumes within a generous bound.

``make cluster`` runs it with more tasks (``TRACKER_CLUSTER_TASKS``); ``-s`` prints the
measured times.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter

import pytest

import tracker
from tests.broker_nodes import PrivateCluster
from tracker import TaskContext, TaskStatus, TaskTracker
from tracker.errors import PublishError
from tracker.retry import RetryPolicy

pytest_plugins = ("tests.conftest_broker_nodes",)

TASKS = int(os.environ.get("TRACKER_CLUSTER_TASKS", "60"))
WORKERS = 2
RESUME_BOUND = 60.0
POLICY = RetryPolicy(initial_delay=0.2, jitter=0, tiers=(0.2, 1))


def _node_index(cluster: PrivateCluster, node: str | None) -> int:
    port = int((node or ":0").rsplit(":", 1)[1])
    return next(i for i, each in enumerate(cluster.nodes) if each.amqp_port == port)


async def _enqueue(pub: tracker.Publisher, queue: str, i: int) -> None:
    """Enqueue task ``i``; while the publisher's own node is away, again until it is back
    (the same task id: the execution a lost publish kept is published again)."""
    for _ in range(60):
        try:
            await pub.enqueue(queue, {"i": i}, task_id=f"{queue}:{i}")
            return
        except PublishError:
            await asyncio.sleep(0.5)
    raise AssertionError(f"task {i} could not be enqueued in 30 s")


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("store")
async def test_a_node_stopped_mid_run_loses_no_task_and_runs_none_twice(
    private_cluster: PrivateCluster,
) -> None:
    # Given: two workers and a publisher, each given the three nodes
    cluster = private_cluster
    loop = asyncio.get_running_loop()
    queue = f"cluster-{uuid.uuid4().hex[:8]}"
    completions: Counter[str] = Counter()
    completed_at: list[float] = []

    @tracker.tracked(queue, retry_policy=POLICY, max_retries=5)
    async def handle(task: TaskContext) -> None:
        await asyncio.sleep(0.005)
        completions[task.task_id] += 1
        completed_at.append(loop.time())

    workers = [
        tracker.Worker([handle], cluster.url_list, concurrency=20, lease=5.0, stats_interval=None)
        for _ in range(WORKERS)
    ]
    try:
        for worker in workers:
            await worker.start()
        async with tracker.Publisher(cluster.url_list) as pub:
            started = loop.time()
            for i in range(TASKS // 2):
                await _enqueue(pub, queue, i)
            async with asyncio.timeout(120):
                while len(completions) < TASKS // 4:
                    await asyncio.sleep(0.05)
            # When: the node the first worker is connected to stops, mid-run
            stopped = _node_index(cluster, workers[0].transport.node)
            stopped_at = loop.time()
            await asyncio.to_thread(cluster.stop_node, stopped)
            stop_took = loop.time() - stopped_at
            for i in range(TASKS // 2, TASKS):
                await _enqueue(pub, queue, i)
            async with asyncio.timeout(300):
                while len(completions) < TASKS:
                    await asyncio.sleep(0.1)
            finished = loop.time()
        # Then: every task completed, each handler once
        assert sorted(completions.values()) == [1] * TASKS
        for i in range(TASKS):
            latest = await tracker.wait_until_complete(f"{queue}:{i}", timeout=10)
            assert latest.status is TaskStatus.COMPLETED
        completed = await TaskTracker.find(
            {"queueName": queue, "status": TaskStatus.COMPLETED.value}
        ).to_list()
        assert len(completed) == TASKS
        # and processing resumed within the bound after the node went (the stop itself takes
        # a few seconds: the node drains its connections first)
        after = [at for at in completed_at if at > stopped_at + stop_took]
        resumed_in = (after[0] - stopped_at) if after else float("inf")
        assert resumed_in < RESUME_BOUND
        assert all(worker.transport.node is not None for worker in workers)
        assert _node_index(cluster, workers[0].transport.node) != stopped
        print(
            f"\ncluster run: {TASKS} tasks, {WORKERS} workers; node {stopped} stopped "
            f"(the stop took {stop_took:.2f} s); first completion after it "
            f"{resumed_in:.2f} s after the stop began; whole run {finished - started:.1f} s"
        )
    finally:
        for worker in workers:
            await worker.stop()
        await asyncio.to_thread(cluster.ensure_all_running)
