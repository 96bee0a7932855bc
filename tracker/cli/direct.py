"""The commands' backend on MongoDB itself: the operations layer, called in this process,
its answers shaped as the API shapes them (``tracker.web.api.schemas``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import click

from tracker.cli.backend import RESTING, AuditFilters, Filters, OnProgress
from tracker.errors import NotFoundError
from tracker.models import TaskTracker
from tracker.operations import audit, dead_letters, groups, ids, replays, search, stuck
from tracker.operations.actors import Actor, cli_actor
from tracker.settings import Settings
from tracker.web.api import replays as replay_routes
from tracker.web.api.schemas import (
    Audit,
    Execution,
    ExecutionDetail,
    Group,
    ListOf,
    Queue,
    Replay,
    ReplayChoice,
    ReplayItemOut,
    ReplayRequest,
    execution,
    execution_detail,
)
from tracker.web.api.triage_schemas import ArchivedOut, FailedOut, ImportCounts, Imported, Purged


def _same(value: Any) -> Any:
    # The command line reads MongoDB itself: nothing is redacted from its operator.
    return value


class DirectBackend:
    """The operations layer on the store this process connected (``app.run``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def actor(self, by: str | None, default: str | None = None) -> Actor:
        try:
            return cli_actor(by or default)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--by") from None

    async def find_ids(self, text: str, kinds: Sequence[ids.Kind]) -> ids.IdMatches:
        return await ids.find_ids(text, kinds)

    async def timeline(self, task_id: str) -> list[ExecutionDetail]:
        return [execution_detail(doc, _same) for doc in await search.timeline(task_id)]

    async def execution(self, execution_id: str) -> ExecutionDetail:
        found = await TaskTracker.find_execution(execution_id)
        if found is None:
            raise NotFoundError(f"no execution {execution_id!r}")
        return execution_detail(found, _same)

    async def queues(self, names: Sequence[str] | None) -> list[Queue]:
        return [Queue.of(summary) for summary in await search.queues(names)]

    async def stuck(
        self, queue: str | None, older_than: float | None, limit: int
    ) -> ListOf[Execution]:
        found = await stuck.find_stuck(queue, older_than, limit=limit)
        items = [execution(doc, _same) for doc in found.executions]
        return ListOf[Execution](items=items, next_cursor=None, total=found.total)

    async def fail_stuck(self, execution_ids: Sequence[str], actor: Actor) -> list[FailedOut]:
        from tracker.cli.publishing import cli_publisher

        async with cli_publisher(self.settings) as publish:
            done = await stuck.fail_stuck(execution_ids, actor=actor, publish=publish)
        return [FailedOut.model_validate(vars(result)) for result in done]

    async def dead_letters(self, filters: Filters) -> ListOf[Execution]:
        selection = _selection(filters)
        found = [execution(doc, _same) async for doc in dead_letters.select(selection)]
        total = await dead_letters.count_matching(selection)
        return ListOf[Execution](items=found, next_cursor=None, total=total)

    async def archive(
        self,
        execution_ids: Sequence[str],
        filters: Filters,
        *,
        reason: str,
        actor: Actor,
        retention: float | None,
    ) -> list[ArchivedOut]:
        entries = await TaskTracker.find(
            {"executionId": {"$in": list(execution_ids)}, "status": "dlq"}
        ).to_list()
        done = await dead_letters.archive_dead_letters(
            entries, actor=actor, reason=reason, retention=retention, selection=filters.described()
        )
        archived = {result.execution_id: result for result in done}
        return [
            ArchivedOut(
                execution_id=eid,
                task_id=archived[eid].task_id if eid in archived else "",
                changed=eid in archived and archived[eid].changed,
            )
            for eid in dict.fromkeys(execution_ids)
        ]

    async def purge(self, older_than: float, *, dry_run: bool, actor: Actor) -> Purged:
        matched = await dead_letters.purge_archived(older_than, dry_run=True)
        if dry_run or matched == 0:
            return Purged(matched=matched, deleted=0)
        deleted = await dead_letters.purge_archived(older_than, actor=actor)
        return Purged(matched=matched, deleted=deleted)

    async def import_queues(self, queues: Sequence[str], *, dry_run: bool) -> Imported:
        from tracker.rabbit.dlq_import import import_queues
        from tracker.rabbit.nodes import NoBrokerNodeError

        try:
            reports = await import_queues(self.settings.amqp_url, queues, dry_run=dry_run)
        except NoBrokerNodeError as error:
            raise click.ClickException(str(error)) from error
        return Imported(queues={q: ImportCounts(**vars(r)) for q, r in reports.items()})

    async def groups(
        self,
        *,
        queue: str | None,
        state: str | None,
        muted: bool | None,
        cursor: str | None,
        limit: int,
    ) -> ListOf[Group]:
        chosen: Any = state
        page = await groups.list_groups(
            queue=queue, state=chosen, muted=muted, cursor=cursor, limit=limit
        )
        total = await groups.count_groups(queue=queue, state=chosen, muted=muted)
        items = [Group.of(group) for group in page.items]
        return ListOf[Group](items=items, next_cursor=page.next_cursor, total=total)

    async def group(self, group_id: str) -> Group:
        found = await groups.get_group(group_id)
        return Group.of(found, dead_letters_left=await groups.dead_letters_left(found.id))

    async def group_action(
        self, action: str, group_id: str, actor: Actor, reason: str | None
    ) -> Group:
        operation = {"mute": groups.mute, "unmute": groups.unmute, "resolve": groups.resolve}
        return Group.of(await operation[action](group_id, actor, reason))

    async def preview_replay(self, choice: ReplayChoice) -> int:
        from tracker.operations.replay_jobs import freeze

        return len(await freeze(replay_routes.selection_of(choice)))

    async def start_replay(self, request: ReplayRequest, actor: Actor) -> Replay:
        return Replay.of(await replay_routes.start(request, actor))

    async def replay(self, replay_id: str) -> Replay:
        return Replay.of(await replays.get_replay(replay_id))

    async def replay_items(
        self, replay_id: str, *, outcome: str | None, cursor: str | None, limit: int
    ) -> ListOf[ReplayItemOut]:
        page = await replays.replay_items(replay_id, outcome=outcome, cursor=cursor, limit=limit)
        items = [ReplayItemOut.of(item) for item in page.items]
        return ListOf[ReplayItemOut](items=items, next_cursor=page.next_cursor)

    async def replays(self, *, state: str | None, cursor: str | None, limit: int) -> ListOf[Replay]:
        chosen: Any = state
        page = await replays.list_replays(state=chosen, cursor=cursor, limit=limit)
        total = await replays.count_replays(state=chosen)
        items = [Replay.of(job) for job in page.items]
        return ListOf[Replay](items=items, next_cursor=page.next_cursor, total=total)

    async def steer_replay(
        self, action: str, replay_id: str, actor: Actor, reason: str | None
    ) -> Replay:
        operation = {"pause": replays.pause, "resume": replays.resume, "cancel": replays.cancel}
        return Replay.of(await operation[action](replay_id, actor, reason=reason))

    async def run_replay(self, replay_id: str, on_progress: OnProgress) -> Replay:
        """Run the job here with this command's publisher; when a service holds it, follow
        it until it rests."""
        from tracker.cli.publishing import cli_publisher

        def shown(job: replays.ReplayJob) -> None:
            on_progress(Replay.of(job))

        async with cli_publisher(self.settings) as publish:
            runner = replays.ReplayRunner(publish, poll=0.5)
            done = await runner.run_job(replay_id, on_progress=shown)
        if done is not None:
            return Replay.of(done)
        while (job := await replays.get_replay(replay_id)).state not in RESTING:
            shown(job)
            await asyncio.sleep(1.0)
        return Replay.of(job)

    async def audit(
        self, filters: AuditFilters, *, cursor: str | None, limit: int
    ) -> ListOf[Audit]:
        wanted = vars(filters)
        page = await audit.entries(**wanted, cursor=cursor, limit=limit)
        total = await audit.count_entries(**wanted)
        items = [Audit.of(entry, _same) for entry in page.items]
        return ListOf[Audit](items=items, next_cursor=page.next_cursor, total=total)


def _selection(filters: Filters) -> dead_letters.Selection:
    return dead_letters.Selection(
        filters.execution_ids,
        filters.queue,
        filters.category,
        filters.older_than,
        filters.group,
        limit=filters.limit,
    )
