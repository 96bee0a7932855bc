"""What the operator commands ask of the tracker, as one interface with two backends: the
MongoDB the workers write to (``direct``, on ``TRACKER_MONGODB_URL``), or a running service's
HTTP API (``remote``, on ``--service``/``TRACKER_SERVICE_URL``). Both answer in the API's
shapes (``tracker.web.api.schemas``), so a command prints the same either way
(``operating`` picks one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tracker.operations.actors import Actor
    from tracker.operations.ids import IdMatches, Kind
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
    )
    from tracker.web.api.triage_schemas import ArchivedOut, FailedOut, Imported, Purged

OnProgress = Callable[["Replay"], None]

# The states a replay job rests in when nobody needs to act: a command following it stops.
RESTING = ("completed", "cancelled", "paused", "stopped")


@dataclass(frozen=True)
class Filters:
    """Which dead letters: by execution id, or by queue, category, minimum age (seconds
    since enqueue) and failure group; at most ``limit``."""

    execution_ids: tuple[str, ...] = ()
    queue: str | None = None
    category: str | None = None
    older_than: float | None = None
    group: str | None = None
    limit: int | None = None

    @property
    def named(self) -> bool:
        """Whether the operator named something specific (ids, a queue or a group)."""
        return bool(self.execution_ids or self.queue or self.group)

    def described(self) -> dict[str, Any]:
        """The filters as the audit log records a selection."""
        described = {
            "execution_ids": list(self.execution_ids)[:100],
            "queue": self.queue,
            "category": self.category,
            "older_than_seconds": self.older_than,
            "group": self.group,
        }
        return {key: value for key, value in described.items() if value not in (None, [])}


@dataclass(frozen=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Backend(Protocol):
    """The tracker as the commands see it. Errors: ``NotFoundError``, ``ConflictError``,
    ``PermissionError``, ``ValueError`` for what the operator can correct (exit 1), a
    ``click.ClickException`` for what is out of reach."""

    async def actor(self, by: str | None, default: str | None = None) -> Actor:
        """Who acts: ``by``, else (on MongoDB) ``default``, TRACKER_ACTOR or the OS user;
        through a service, the token's name (``by`` must be it)."""
        ...

    async def find_ids(self, text: str, kinds: Sequence[Kind]) -> IdMatches: ...

    async def timeline(self, task_id: str) -> list[ExecutionDetail]: ...

    async def execution(self, execution_id: str) -> ExecutionDetail: ...

    async def queues(self, names: Sequence[str] | None) -> list[Queue]: ...

    async def stuck(
        self, queue: str | None, older_than: float | None, limit: int
    ) -> ListOf[Execution]: ...

    async def fail_stuck(self, execution_ids: Sequence[str], actor: Actor) -> list[FailedOut]: ...

    async def dead_letters(self, filters: Filters) -> ListOf[Execution]: ...

    async def archive(
        self,
        execution_ids: Sequence[str],
        filters: Filters,
        *,
        reason: str,
        actor: Actor,
        retention: float | None,
    ) -> list[ArchivedOut]: ...

    async def purge(self, older_than: float, *, dry_run: bool, actor: Actor) -> Purged: ...

    async def import_queues(self, queues: Sequence[str], *, dry_run: bool) -> Imported: ...

    async def groups(
        self,
        *,
        queue: str | None,
        state: str | None,
        muted: bool | None,
        cursor: str | None,
        limit: int,
    ) -> ListOf[Group]: ...

    async def group(self, group_id: str) -> Group: ...

    async def group_action(
        self, action: str, group_id: str, actor: Actor, reason: str | None
    ) -> Group: ...

    async def preview_replay(self, choice: ReplayChoice) -> int: ...

    async def start_replay(self, request: ReplayRequest, actor: Actor) -> Replay: ...

    async def replay(self, replay_id: str) -> Replay: ...

    async def replay_items(
        self, replay_id: str, *, outcome: str | None, cursor: str | None, limit: int
    ) -> ListOf[ReplayItemOut]: ...

    async def replays(
        self, *, state: str | None, cursor: str | None, limit: int
    ) -> ListOf[Replay]: ...

    async def steer_replay(
        self, action: str, replay_id: str, actor: Actor, reason: str | None
    ) -> Replay: ...

    async def run_replay(self, replay_id: str, on_progress: OnProgress) -> Replay: ...

    async def audit(
        self, filters: AuditFilters, *, cursor: str | None, limit: int
    ) -> ListOf[Audit]: ...
