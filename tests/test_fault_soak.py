"""A handler never runs twice, whatever happens: a small fault soak (the engine is tests/soak.py;
``python -m tests.soak --tasks 3000 --workers 4`` runs a larger one).

Three worker processes share a private RabbitMQ node and a MongoDB stand-in; 200 tasks are
published over 25 seconds while the node's connections are closed four times, the node is
SIGKILLed and restarted, and a worker process is SIGKILLed inside a long handler and replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.broker_nodes import PrivateNode
from tests.soak import Completion, SoakConfig, check_runs, parse_schedule, run_soak
from tracker import HistoryEntry, TaskStatus, TaskTracker

pytest_plugins = ("tests.conftest_broker_nodes",)

TASKS = 200
SCHEDULE = "close@0.1,close@0.25,worker-kill@0.3,node-kill@0.45,close@0.65,close@0.8"


@pytest.mark.rabbitmq
@pytest.mark.broker_nodes
@pytest.mark.timeout(240)
async def test_no_handler_runs_twice_through_dropped_connections_a_node_crash_and_a_killed_worker(
    private_node: PrivateNode,
) -> None:
    # Given: 200 tasks (some fail transiently once, some are invalid, some run long), three
    # worker processes with 2-second leases, and a fault schedule over the publishing window
    config = SoakConfig(
        tasks=TASKS,
        workers=3,
        seconds=25.0,
        schedule=parse_schedule(SCHEDULE),
        lease=2.0,
        transient=0.1,
        invalid=0.03,
        long=0.01,
        republish_after=20.0,
        drain_timeout=45.0,
        seed=20261129,
    )

    # When: the tasks run while the faults are injected
    report = await run_soak(config, node=private_node)
    print(report.explain())

    # Then: every fault happened, every task ended once as its fate says, none was lost, and
    # no handler completed twice except where a superseded claim explains it
    explanation = report.explain()
    assert report.faults["close_connections"] == 4, explanation
    assert report.faults["node_restart"] == 1, explanation
    assert report.faults["worker_kill"] == 1, explanation
    assert report.faults["replacement_worker"] == 1, explanation
    assert report.drained, explanation
    assert report.lost == 0, explanation
    assert report.completed + report.dlq == TASKS, explanation
    assert report.dlq == report.expected_dlq, explanation
    assert report.completed_twice == 0, explanation
    assert report.twice == 0, explanation
    assert report.handler_completions >= report.completed, explanation
    assert report.problems == [], explanation


T0 = datetime(2026, 11, 29, tzinfo=UTC)


def _execution(*history: tuple[TaskStatus, str | None, float]) -> TaskTracker:
    return TaskTracker(
        task_id="soak-000001",
        execution_id="e1",
        queue_name="soak",
        status=history[-1][0],
        history=[
            HistoryEntry(status=status, at=T0 + timedelta(seconds=at), worker=worker)
            for status, worker, at in history
        ],
    )


def _run(worker: str, pid: int) -> Completion:
    return Completion("soak-000001", "e1", worker, pid)


Q, P, C = TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.COMPLETED


@pytest.mark.usefixtures("store")
async def test_a_second_run_is_twice_unless_a_superseded_claim_explains_it() -> None:
    # Given: an execution claimed by w1, taken over by w2 after the lease, completed by w2;
    # and one claimed once, by w2, and completed by it
    taken_over = _execution((Q, None, 0), (P, "w1:10", 1), (P, "w2:20", 3.5), (C, "w2:20", 4))
    claimed_once = _execution((Q, None, 0), (P, "w2:20", 1), (C, "w2:20", 1.5))
    stolen = _execution((Q, None, 0), (P, "w1:10", 1), (P, "w2:20", 1.5), (C, "w2:20", 2))

    # When: the completions file shows two completed runs of each
    lost_claim = check_runs(taken_over, [_run("w1", 10), _run("w2", 20)], set(), lease=2.0)
    killed = check_runs(taken_over, [_run("w1", 10), _run("w2", 20)], {10}, lease=2.0)
    again = check_runs(claimed_once, [_run("w2", 20), _run("w3", 30)], set(), lease=2.0)
    early = check_runs(stolen, [_run("w2", 20)], set(), lease=2.0)
    unrecorded = check_runs(claimed_once, [], set(), lease=2.0)

    # Then: only the run whose claim was superseded is explained
    assert (lost_claim.outcomes, lost_claim.problems) == (["rerun_after_lost_claim"], [])
    assert (killed.outcomes, killed.problems) == (["rerun_after_kill"], [])
    assert again.outcomes == ["twice"]
    assert "completed again in w3:30" in again.problems[0]
    assert "taken over 0.500s after it was made" in early.problems[0]
    assert "whose handler never completed it" in unrecorded.problems[0]
