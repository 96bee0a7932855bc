"""The commands' backend on a running service: each call one request to its HTTP API
(``/api/v1``), each answer read into the API's own shapes, so the commands print what they
print on MongoDB. Actions are the token's: the service audits them under its name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import quote

import click

from tracker.cli.app import ServiceTarget
from tracker.cli.backend import RESTING, AuditFilters, Backend, Filters, OnProgress
from tracker.cli.remote_http import Http, ServiceError
from tracker.operations.actors import Actor
from tracker.operations.ids import IdMatch, IdMatches, Kind
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
    Timeline,
)
from tracker.web.api.triage_schemas import (
    ArchivedList,
    ArchivedOut,
    FailedList,
    FailedOut,
    Imported,
    Matched,
    Me,
    Purged,
)

T = TypeVar("T")
POLL: Final = 0.5
# A job no runner took by then is waiting for a service that runs none.
UNTAKEN_AFTER: Final = 60.0


def segment(value: str) -> str:
    """``value`` as one path segment: every reserved character escaped, dots too (a
    segment of dots would otherwise be read as a relative path)."""
    return quote(value, safe="").replace(".", "%2E")


class RemoteBackend:
    def __init__(self, http: Http) -> None:
        self.http = http

    @classmethod
    async def using(cls, target: ServiceTarget, work: Callable[[Backend], Awaitable[T]]) -> T:
        async with Http(target) as http:
            return await work(cls(http))

    async def actor(self, by: str | None, default: str | None = None) -> Actor:
        me = Me.model_validate(await self.http.get("/me"))
        if by is not None and by != me.name:
            raise click.UsageError(
                f"--by {by[:128]!r}: through a service you act as {me.name!r}, the name of "
                "your token (TRACKER_SERVICE_TOKEN)"
            )
        return Actor(me.name, me.role, "api")

    async def find_ids(self, text: str, kinds: Sequence[Kind]) -> IdMatches:
        found = await self.http.get("/ids", {"text": text, "kind": list(kinds)})
        return IdMatches(
            exact=[IdMatch(**match) for match in found["exact"]],
            prefixed=[IdMatch(**match) for match in found["prefixed"]],
            more=bool(found["more"]),
        )

    async def timeline(self, task_id: str) -> list[ExecutionDetail]:
        found = await self.http.get(f"/tasks/{segment(task_id)}")
        return Timeline.model_validate(found).executions

    async def execution(self, execution_id: str) -> ExecutionDetail:
        found = await self.http.get(f"/executions/{segment(execution_id)}")
        return ExecutionDetail.model_validate(found)

    async def queues(self, names: Sequence[str] | None) -> list[Queue]:
        found = await self.http.get("/queues", {"name": list(names or ())})
        return ListOf[Queue].model_validate(found).items

    async def stuck(
        self, queue: str | None, older_than: float | None, limit: int
    ) -> ListOf[Execution]:
        params = {"queue": queue, "older_than": older_than, "limit": limit}
        return ListOf[Execution].model_validate(await self.http.get("/stuck", params))

    async def fail_stuck(self, execution_ids: Sequence[str], actor: Actor) -> list[FailedOut]:
        done = await self.http.post("/stuck/fail", {"execution_ids": list(execution_ids)})
        return FailedList.model_validate(done).results

    async def dead_letters(self, filters: Filters) -> ListOf[Execution]:
        params = {
            "execution_id": list(filters.execution_ids),
            "queue": filters.queue,
            "category": filters.category,
            "older_than": filters.older_than,
            "group_id": filters.group,
            "limit": filters.limit,
        }
        return ListOf[Execution].model_validate(await self.http.get("/dead-letters", params))

    async def archive(
        self,
        execution_ids: Sequence[str],
        filters: Filters,
        *,
        reason: str,
        actor: Actor,
        retention: float | None,
    ) -> list[ArchivedOut]:
        body = {
            "execution_ids": list(execution_ids),
            "reason": reason,
            "retention_seconds": retention,
            "queue": filters.queue,
            "category": filters.category,
            "older_than_seconds": filters.older_than,
            "group_id": filters.group,
        }
        done = await self.http.post("/dead-letters/archive", body)
        return ArchivedList.model_validate(done).results

    async def purge(self, older_than: float, *, dry_run: bool, actor: Actor) -> Purged:
        body = {"archived_older_than_seconds": older_than, "dry_run": dry_run}
        return Purged.model_validate(await self.http.post("/archived/purge", body))

    async def import_queues(self, queues: Sequence[str], *, dry_run: bool) -> Imported:
        body = {"queues": list(queues), "dry_run": dry_run}
        return Imported.model_validate(await self.http.post("/dead-letters/import", body))

    async def groups(
        self,
        *,
        queue: str | None,
        state: str | None,
        muted: bool | None,
        cursor: str | None,
        limit: int,
    ) -> ListOf[Group]:
        params = {"queue": queue, "state": state, "muted": muted, "cursor": cursor, "limit": limit}
        return ListOf[Group].model_validate(await self.http.get("/failure-groups", params))

    async def group(self, group_id: str) -> Group:
        return Group.model_validate(await self.http.get(f"/failure-groups/{segment(group_id)}"))

    async def group_action(
        self, action: str, group_id: str, actor: Actor, reason: str | None
    ) -> Group:
        path = f"/failure-groups/{segment(group_id)}/{action}"
        return Group.model_validate(await self.http.post(path, {"reason": reason}))

    async def preview_replay(self, choice: ReplayChoice) -> int:
        # Only the selection: a whole request may be given, and the preview takes no more.
        fields = set(ReplayChoice.model_fields)
        body = choice.model_dump(mode="json", exclude_unset=True, include=fields)
        return Matched.model_validate(await self.http.post("/replays/preview", body)).matched

    async def start_replay(self, request: ReplayRequest, actor: Actor) -> Replay:
        body = request.model_dump(mode="json", exclude_unset=True)
        return Replay.model_validate(await self.http.post("/replays", body))

    async def replay(self, replay_id: str) -> Replay:
        return Replay.model_validate(await self.http.get(f"/replays/{segment(replay_id)}"))

    async def replay_items(
        self, replay_id: str, *, outcome: str | None, cursor: str | None, limit: int
    ) -> ListOf[ReplayItemOut]:
        params = {"outcome": outcome, "cursor": cursor, "limit": limit}
        found = await self.http.get(f"/replays/{segment(replay_id)}/items", params)
        return ListOf[ReplayItemOut].model_validate(found)

    async def replays(self, *, state: str | None, cursor: str | None, limit: int) -> ListOf[Replay]:
        params = {"state": state, "cursor": cursor, "limit": limit}
        return ListOf[Replay].model_validate(await self.http.get("/replays", params))

    async def steer_replay(
        self, action: str, replay_id: str, actor: Actor, reason: str | None
    ) -> Replay:
        path = f"/replays/{segment(replay_id)}/{action}"
        return Replay.model_validate(await self.http.post(path, {"reason": reason}))

    async def run_replay(self, replay_id: str, on_progress: OnProgress) -> Replay:
        """The service runs the job: follow it until it rests."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (job := await self.replay(replay_id)).state not in RESTING:
            on_progress(job)
            if job.state == "pending" and loop.time() - started > UNTAKEN_AFTER:
                raise ServiceError(
                    f"replay {job.id} is still pending after {UNTAKEN_AFTER:g} s: the service "
                    f"runs no replays (is it `tracker serve`?); `tracker replay status {job.id}`"
                )
            await asyncio.sleep(POLL)
        return job

    async def audit(
        self, filters: AuditFilters, *, cursor: str | None, limit: int
    ) -> ListOf[Audit]:
        params: dict[str, Any] = {
            "actor": filters.actor,
            "action": filters.action,
            "target": filters.target,
            "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None,
            "cursor": cursor,
            "limit": limit,
        }
        return ListOf[Audit].model_validate(await self.http.get("/audit", params))
