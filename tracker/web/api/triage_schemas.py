"""The JSON shapes of the triage endpoints (who am I, ids, stuck executions, dead letters),
in the conventions of ``schemas``: snake_case keys, bounded fields, each answer built from
what the operations layer returns."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tracker.lifecycle import ErrorCategory
from tracker.operations.ids import IdMatch, IdMatches
from tracker.web.api.schemas import Schema

MAX_IDS = 1000
Id = Annotated[str, Field(min_length=1, max_length=512)]


class Me(Schema):
    """The caller as the API knows it: the name the audit log records, the role."""

    name: str
    role: Literal["viewer", "operator"]
    via: str


class IdMatchOut(Schema):
    kind: Literal["execution", "task", "group", "replay"]
    id: str
    task_id: str | None
    queue: str | None
    status: str | None

    @classmethod
    def of(cls, match: IdMatch) -> IdMatchOut:
        return cls(**{name: getattr(match, name) for name in cls.model_fields})


class IdMatchesOut(Schema):
    exact: list[IdMatchOut] = Field(description="what the text names whole")
    prefixed: list[IdMatchOut] = Field(description="what it begins (at most 10)")
    more: bool = Field(description="more ids begin with it than are listed")

    @classmethod
    def of(cls, matches: IdMatches) -> IdMatchesOut:
        return cls(
            exact=[IdMatchOut.of(m) for m in matches.exact],
            prefixed=[IdMatchOut.of(m) for m in matches.prefixed],
            more=matches.more,
        )


class FailStuckRequest(Schema):
    execution_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)


class FailedOut(Schema):
    execution_id: str
    task_id: str | None
    outcome: Literal["retried", "dead_lettered", "skipped"]
    timeout_seconds: float | None = Field(description="the timeout it was failed under")
    next_execution_id: str | None


class FailedList(Schema):
    results: list[FailedOut]


class ArchiveRequest(Schema):
    """Dead letters to archive, by execution id, with why; ``selection``: how they were
    chosen, for the audit log."""

    execution_ids: list[Id] = Field(min_length=1, max_length=10_000)
    reason: str = Field(min_length=1, max_length=500)
    retention_seconds: float | None = Field(default=None, ge=0, le=100 * 365 * 86400)
    queue: str | None = Field(default=None, min_length=1, max_length=512)
    category: ErrorCategory | None = None
    older_than_seconds: float | None = Field(default=None, ge=0, le=100 * 365 * 86400)
    group_id: str | None = Field(default=None, min_length=1, max_length=512)


class ArchivedOut(Schema):
    execution_id: str
    task_id: str
    changed: bool = Field(description="false: it was archived already, or is no dead letter")


class ArchivedList(Schema):
    results: list[ArchivedOut]


class PurgeRequest(Schema):
    archived_older_than_seconds: float = Field(ge=0, le=100 * 365 * 86400)
    dry_run: bool = False


class Purged(Schema):
    matched: int
    deleted: int


class ImportRequest(Schema):
    queues: list[Id] = Field(min_length=1, max_length=100)
    dry_run: bool = False


class ImportCounts(Schema):
    imported: int
    already_tracked: int
    invalid: int
    reasons: list[str]


class Imported(Schema):
    queues: dict[str, ImportCounts]


class Matched(Schema):
    matched: int = Field(description="how many tasks the selection matches now")
