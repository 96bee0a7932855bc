"""Replay jobs: the selection frozen at creation, dry runs, the rate, the canary, pause,
resume and cancel, per-item outcomes followed through the new executions, and a runner
that dies in the middle, resumed by another without republishing anything twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from tests.conftest import needs_in_memory
from tests.dead_letters import Recorder, complete, dead_letter, fail
from tests.index_shapes import Query, recorded, unserved
from tracker import TaskStatus, create_execution
from tracker.clock import utcnow
from tracker.delivery.envelope import OutgoingMessage
from tracker.errors import ConflictError, NotFoundError, PublishError
from tracker.models import INDEXES, TaskTracker
from tracker.operations import audit, groups, replays
from tracker.operations.actors import Actor
from tracker.operations.replays import ReplayJob, ReplayRunner, ReplaySelection
from tracker.store import connection, operator_records
from tracker.store.operator_records import REPLAY_ITEMS, REPLAYS
from tracker.testing import store_outage

__all__ = ["recorded"]
pytestmark = pytest.mark.usefixtures("store")
ANA = Actor("ana", "operator", "cli")


async def _start(selection: ReplaySelection, **options: Any) -> ReplayJob:
    options.setdefault("follow_seconds", 0)
    return await replays.create_replay(selection, actor=ANA, reason="partner is back", **options)


async def _new_executions(job_id: str) -> list[TaskTracker]:
    return await TaskTracker.find({"replayId": job_id}).to_list()


async def test_a_dry_run_counts_tasks_and_changes_nothing() -> None:
    # Given: three dead letters of two tasks
    for task_id in ("t:1", "t:2", "t:1"):
        await dead_letter(task_id)
    # When
    job = await _start(ReplaySelection(queue="reports"), dry_run=True)
    # Then
    assert (job.state, job.dry_run, job.matched, job.pending) == ("completed", True, 2, 0)
    assert (await replays.replay_items(job.id)).items == []
    [entry] = (await audit.entries(action="replay.dry_run")).items
    assert entry.result == {"outcome": "done", "matched": 2, "dry_run": True}
    assert entry.selection == {"queue": "reports", "status": "dlq"}
    assert await ReplayRunner(Recorder()).run_job(job.id) is None


async def test_a_replay_runs_each_task_once_and_archives_its_dead_letters() -> None:
    # Given: a group of three dead letters, two of them of one task, and a selection frozen
    first = await dead_letter("t:1", payload={"n": 1})
    again = await dead_letter("t:1", payload={"n": 2})
    other = await dead_letter("t:2")
    job = await _start(ReplaySelection(group_id=first.group_id))
    late = await dead_letter("t:3")  # after the job was created: not in it
    publish = Recorder()
    # When
    done = await ReplayRunner(publish).run_job(job.id)
    # Then
    assert done is not None
    assert (done.state, done.matched, done.republished, done.pending) == ("completed", 2, 2, 0)
    new = {e.task_id: e for e in await _new_executions(job.id)}
    assert sorted(new) == ["t:1", "t:2"]
    assert sorted(publish.execution_ids) == sorted(e.execution_id for e in new.values())
    assert new["t:1"].payload == {"n": 2}  # the newest dead letter of the task
    assert new["t:1"].source_execution_id == again.execution_id
    assert new["t:1"].retry_count == again.retry_count + 1
    for source, task in ((first, "t:1"), (again, "t:1"), (other, "t:2")):
        archived = await TaskTracker.find_execution(source.execution_id)
        assert archived is not None
        assert archived.status is TaskStatus.ARCHIVED
        assert archived.archived_reason == "Manual retry initiated"
        assert (archived.archived_by, archived.next_execution_id) == (
            "ana",
            new[task].execution_id,
        )
    untouched = await TaskTracker.find_execution(late.execution_id)
    assert untouched is not None
    assert untouched.status is TaskStatus.DLQ
    items = (await replays.replay_items(job.id)).items
    assert [(i.task_id, i.outcome) for i in items] == [
        ("t:1", "republished"),
        ("t:2", "republished"),
    ]
    assert items[0].supersedes == (first.execution_id,)


async def test_the_group_resolves_itself_once_its_dead_letters_are_replayed() -> None:
    # Given
    dead = await dead_letter("t:1")
    gid = dead.group_id or ""
    job = await _start(ReplaySelection(group_id=gid))
    # When
    await ReplayRunner(Recorder()).run_job(job.id)
    # Then
    assert (await groups.get_group(gid)).state == "resolved"


async def test_items_are_followed_to_success_or_failure_again() -> None:
    # Given: a job that follows its new executions
    for n in range(3):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"), follow_seconds=3600)
    runner = ReplayRunner(Recorder(), poll=0)
    progress: list[tuple[str, int, int, int]] = []

    async def consumer(seen: ReplayJob) -> None:
        # When: the consumer runs them as they come: two succeed, one fails again
        progress.append((seen.state, seen.republished, seen.succeeded, seen.failed))
        for execution in await _new_executions(job.id):
            if execution.status is TaskStatus.QUEUED:
                if execution.task_id == "t:1":
                    await fail(execution.execution_id, "still broken")
                else:
                    await complete(execution.execution_id)

    done = await runner.run_job(job.id, on_progress=consumer)
    # Then
    assert done is not None
    assert (done.state, done.succeeded, done.failed, done.republished) == ("completed", 2, 1, 0)
    failed = (await replays.replay_items(job.id, outcome="failed")).items
    assert [(i.task_id, i.detail) for i in failed] == [("t:1", "still broken")]
    assert progress[0] == ("running", 0, 0, 0)


async def test_the_canary_stops_a_job_whose_first_items_fail_again() -> None:
    # Given: five dead letters and a canary of two that allows half of them to fail
    for n in range(5):
        await dead_letter(f"t:{n}")
    job = await _start(
        ReplaySelection(queue="reports"),
        canary_size=2,
        canary_max_failure_share=0.5,
        follow_seconds=3600,
    )

    async def both_fail(seen: ReplayJob) -> None:
        for execution in await _new_executions(job.id):
            if execution.status is TaskStatus.QUEUED:
                await fail(execution.execution_id, "still broken")

    # When
    stopped = await ReplayRunner(Recorder(), poll=0).run_job(job.id, on_progress=both_fail)
    # Then: stopped after the canary; the other three never ran
    assert stopped is not None
    assert (stopped.state, stopped.failed, stopped.pending) == ("stopped", 2, 3)
    assert stopped.stopped_reason == (
        "canary: 2 of the first 2 republished failed again (100%, more than 50%)"
    )
    assert len(await _new_executions(job.id)) == 2
    # When: the operator resumes it after a look
    resumed = await replays.resume(job.id, ANA)
    await connection.database()[REPLAYS].update_one({"_id": job.id}, {"$set": {"followSeconds": 0}})
    done = await ReplayRunner(Recorder()).run_job(job.id)
    # Then
    assert resumed.state == "running"
    assert done is not None
    assert (done.state, done.republished, done.pending) == ("completed", 3, 0)


async def test_a_canary_within_its_share_lets_the_job_go_on() -> None:
    # Given: a canary of two allowing half; one of the two fails again
    for n in range(4):
        await dead_letter(f"t:{n}")
    job = await _start(
        ReplaySelection(queue="reports"),
        canary_size=2,
        canary_max_failure_share=0.5,
        follow_seconds=3600,
    )

    async def one_fails(seen: ReplayJob) -> None:
        for execution in await _new_executions(job.id):
            if execution.status is TaskStatus.QUEUED:
                if execution.task_id == "t:0":
                    await fail(execution.execution_id)
                else:
                    await complete(execution.execution_id)

    # When
    done = await ReplayRunner(Recorder(), poll=0).run_job(job.id, on_progress=one_fails)
    # Then
    assert done is not None
    assert (done.state, done.failed, done.succeeded) == ("completed", 1, 3)


async def test_the_rate_spaces_republishes_on_the_runner_clock() -> None:
    # Given: five items at two per second, on a fake clock moved only by sleeping
    for n in range(5):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"), rate_per_second=2)
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    runner = ReplayRunner(Recorder(), clock=lambda: now[0], sleep=sleep)
    # When
    done = await runner.run_job(job.id)
    # Then: four waits of half a second between five publishes
    assert done is not None
    assert done.republished == 5
    assert slept == [0.5] * 4


async def test_pause_stops_after_the_current_item_and_resume_goes_on() -> None:
    # Given
    for n in range(4):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"))

    async def pause_after_two(seen: ReplayJob) -> None:
        if seen.republished == 2 and seen.state == "running":
            await replays.pause(job.id, ANA, reason="watching the partner")

    # When
    paused = await ReplayRunner(Recorder()).run_job(job.id, on_progress=pause_after_two)
    # Then
    assert paused is not None
    assert (paused.state, paused.republished, paused.pending) == ("paused", 2, 2)
    assert await ReplayRunner(Recorder()).run_job(job.id) is None  # a paused job does not run
    with pytest.raises(ConflictError, match="paused"):
        await replays.pause(job.id, ANA)
    # When
    await replays.resume(job.id, ANA)
    done = await ReplayRunner(Recorder()).run_job(job.id)
    # Then
    assert done is not None
    assert (done.state, done.republished) == ("completed", 4)
    actions = sorted(e.action for e in (await audit.entries(target=f"replay:{job.id}")).items)
    assert actions == ["replay.pause", "replay.pause", "replay.resume", "replay.start"]


async def test_cancel_skips_what_is_left_and_a_finished_job_refuses_actions() -> None:
    # Given
    for n in range(3):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"))
    # When
    cancelled = await replays.cancel(job.id, ANA)
    # Then
    assert (cancelled.state, cancelled.skipped, cancelled.pending) == ("cancelled", 3, 0)
    items = (await replays.replay_items(job.id)).items
    assert {(i.outcome, i.detail) for i in items} == {("skipped", "cancelled")}
    for action in (replays.pause, replays.resume, replays.cancel):
        with pytest.raises(ConflictError, match="cancelled"):
            await action(job.id, ANA)
    with pytest.raises(NotFoundError):
        await replays.pause("no-such-job", ANA)
    stored = await connection.database()[REPLAYS].find_one({"_id": job.id})
    assert stored is not None
    assert stored["expiresAt"] > utcnow()


class BlockingPublish(Recorder):
    """Publishes until the ``block_at``-th message, which never returns."""

    def __init__(self, block_at: int) -> None:
        super().__init__()
        self.block_at = block_at
        self.calls = 0
        self.blocked = asyncio.Event()

    async def __call__(self, message: OutgoingMessage) -> None:
        self.calls += 1
        if self.calls == self.block_at:
            self.blocked.set()
            await asyncio.Event().wait()
        await super().__call__(message)


async def test_a_runner_that_dies_mid_job_is_resumed_without_republishing_twice() -> None:
    # Given: a runner whose process dies while publishing the third of five items
    for n in range(5):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"))
    dying = BlockingPublish(block_at=3)
    task = asyncio.create_task(ReplayRunner(dying, lease=60).run_job(job.id))
    await asyncio.wait_for(dying.blocked.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # When: another runner looks while the dead runner's lease still holds, then after
    second = Recorder()
    assert await ReplayRunner(second).run_job(job.id) is None
    await connection.database()[REPLAYS].update_one(
        {"_id": job.id}, {"$set": {"leaseExpiresAt": utcnow() - timedelta(seconds=1)}}
    )
    done = await ReplayRunner(second).run_job(job.id)
    # Then: every task has one new execution, each published once
    assert done is not None
    assert (done.state, done.republished) == ("completed", 5)
    new = await _new_executions(job.id)
    assert sorted(e.task_id for e in new) == [f"t:{n}" for n in range(5)]
    published = dying.execution_ids + second.execution_ids
    assert sorted(published) == sorted(e.execution_id for e in new)


async def test_two_runners_on_one_job_run_each_item_once() -> None:
    # Given
    for n in range(6):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"))
    first, second = Recorder(), Recorder()
    # When
    results = await asyncio.gather(
        ReplayRunner(first).run_job(job.id), ReplayRunner(second).run_job(job.id)
    )
    # Then: one of them ran it
    assert sorted(r is None for r in results) == [False, True]
    assert len(first.messages) + len(second.messages) == 6
    assert len(await _new_executions(job.id)) == 6


@needs_in_memory
async def test_a_store_outage_interrupts_a_job_that_resumes_afterwards() -> None:
    # Given
    for n in range(3):
        await dead_letter(f"t:{n}")
    job = await _start(ReplaySelection(queue="reports"))
    runner = ReplayRunner(Recorder())
    # When: MongoDB is unreachable while the runner looks for jobs
    with store_outage():
        await runner.tick()  # logged, not raised
        with pytest.raises(AutoReconnect):
            await runner.run_job(job.id)
    started = await runner.run_once()
    await asyncio.gather(*runner._running.values())
    # Then
    assert started == [job.id]
    finished = await replays.get_replay(job.id)
    assert (finished.state, finished.republished) == ("completed", 3)


async def test_a_message_the_broker_refuses_is_tried_again_then_skipped() -> None:
    # Given: a broker that refuses every message (unroutable)
    await dead_letter("t:1")
    job = await _start(ReplaySelection(queue="reports"))

    async def refuse(message: OutgoingMessage) -> None:
        raise PublishError("unroutable", maybe_published=False)

    # When
    done = await ReplayRunner(refuse, poll=0).run_job(job.id)
    # Then: three attempts, then skipped; no execution left behind
    assert done is not None
    assert (done.state, done.skipped) == ("completed", 1)
    [item] = (await replays.replay_items(job.id)).items
    assert item.detail == "not published: unroutable"
    assert await _new_executions(job.id) == []
    source = await TaskTracker.find_execution(item.execution_id)
    assert source is not None
    assert source.status is TaskStatus.DLQ


async def test_an_item_whose_task_is_active_again_is_skipped() -> None:
    # Given: a dead letter retried by someone else after the job froze it
    dead = await dead_letter("t:1")
    job = await _start(ReplaySelection(task_ids=("t:1",)))
    await create_execution("t:1", "reports", {"n": 1})
    # When
    done = await ReplayRunner(Recorder()).run_job(job.id)
    # Then
    assert done is not None
    [item] = (await replays.replay_items(job.id)).items
    assert item.outcome == "skipped"
    assert (item.detail or "").startswith("the task already has an active execution")
    assert dead.status is TaskStatus.DLQ


@pytest.mark.parametrize(
    ("selection", "error"),
    [
        ({}, ValueError),
        ({"queue": "q", "status": "completed"}, ValueError),
        ({"task_ids": "t:1"}, TypeError),
        ({"task_ids": ({"$ne": None},)}, TypeError),
        ({"group_id": "\x1b[2J"}, ValueError),
        ({"queue": "q", "since": "yesterday"}, TypeError),
        ({"execution_ids": tuple(f"e{n}" for n in range(1001))}, ValueError),
    ],
)
def test_a_hostile_selection_is_refused(selection: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ReplaySelection(**selection)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"reason": "  "}, ValueError),
        ({"reason": None}, TypeError),
        ({"rate_per_second": float("nan")}, ValueError),
        ({"rate_per_second": 0}, ValueError),
        ({"rate_per_second": True}, TypeError),
        ({"canary_size": 0}, ValueError),
        ({"canary_max_failure_share": 0.5}, ValueError),
        ({"canary_size": 2, "canary_max_failure_share": 1.5}, ValueError),
        ({"follow_seconds": -1}, ValueError),
    ],
)
async def test_hostile_options_are_refused_before_anything_is_written(
    options: dict[str, Any], error: type[Exception]
) -> None:
    options.setdefault("reason", "why")
    with pytest.raises(error):
        await replays.create_replay(ReplaySelection(queue="q"), actor=ANA, **options)
    with pytest.raises(PermissionError):
        await replays.create_replay(
            ReplaySelection(queue="q"), actor=Actor("viv", "viewer", "api"), reason="why"
        )
    assert (await replays.list_replays()).items == []
    assert (await audit.entries()).items == []


async def test_every_replay_query_is_served_by_an_index(recorded: list[Query]) -> None:
    # Given / When: every selection shape, a job with a canary run through, every listing
    dead = [await dead_letter(f"t:{n}") for n in range(3)]
    for selection in (
        ReplaySelection(queue="reports", since=utcnow() - timedelta(days=1)),
        ReplaySelection(group_id=dead[0].group_id),
        ReplaySelection(task_ids=("t:1", "t:2")),
        ReplaySelection(execution_ids=(dead[0].execution_id,)),
        ReplaySelection(queue="reports", category="infrastructure", status=TaskStatus.ARCHIVED),
    ):
        await _start(selection, dry_run=True)
    job = await _start(ReplaySelection(queue="reports"), canary_size=1)
    runner = ReplayRunner(Recorder())
    await runner.run_once()
    await asyncio.gather(*runner._running.values())
    for state in (None, "completed"):
        page = await replays.list_replays(state=state, limit=1)  # type: ignore[arg-type]
        await replays.list_replays(state=state, cursor=page.next_cursor, limit=1)  # type: ignore[arg-type]
    for outcome in (None, "republished"):
        page = await replays.replay_items(job.id, outcome=outcome, limit=1)
        await replays.replay_items(job.id, outcome=outcome, cursor=page.next_cursor, limit=1)
    second = await _start(ReplaySelection(task_ids=("t:9",)))
    await replays.cancel(second.id, ANA)
    # Then
    indexes = {
        REPLAYS: operator_records.REPLAY_INDEXES,
        REPLAY_ITEMS: operator_records.REPLAY_ITEM_INDEXES,
        connection.collection().name: INDEXES,
    }
    assert {q.collection for q in recorded} >= set(indexes)
    assert unserved(recorded, indexes) == []
