"""What the ``tracker dlq`` commands share: the options that select dead letters, the
selection itself (ids of executions or tasks, whole or by their start; a failure group by
its id or the start of it), and the summary they print."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from tracker.cli.backend import Backend, Filters
from tracker.cli.output import emit_json, table
from tracker.cli.params import DURATION, ID, Id
from tracker.cli.resolve import one
from tracker.constants import DEFAULT_ARCHIVED_RETENTION_SECONDS
from tracker.errors import NotFoundError

if TYPE_CHECKING:
    from tracker.web.api.schemas import Execution

CATEGORIES = ["transient", "validation", "processing", "infrastructure", "partner_api", "unknown"]


class GroupId(Id):
    """A failure group's id (or its start); ``--group`` alone used to list the groups."""

    name = "group"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value == "":
            self.fail(
                "give the group's id: `--group ID` selects that group's dead letters "
                "(`tracker groups list` lists the groups)"
            )
        return super().convert(value, param, ctx)


group_option = click.option(
    "--group",
    "-g",
    type=GroupId(),
    is_flag=False,
    flag_value="",
    help="Only this failure group's, by id or its start (`tracker groups list`).",
)


def filter_options(func: Any) -> Any:
    """--queue, --category, --older-than and --group."""
    for option in reversed(
        [
            click.option("--queue", "-q", type=ID, help="Only dead letters of this queue."),
            click.option(
                "--category", "-c", type=click.Choice(CATEGORIES), help="Only this category."
            ),
            click.option(
                "--older-than", type=DURATION, help="Only entries enqueued longer ago (e.g. 7d)."
            ),
            group_option,
        ]
    ):
        func = option(func)
    return func


by_option = click.option(
    "--by",
    "archived_by",
    type=ID,
    help="Who does it (archivedBy and the audit log; default: TRACKER_ACTOR, else you; "
    "through a service: your token's name).",
)
retention_option = click.option(
    "--retention",
    type=DURATION,
    default=DEFAULT_ARCHIVED_RETENTION_SECONDS,
    help="Keep the archived entries this long (default 30d).",
)


def filters_of(
    execution_ids: tuple[str, ...],
    queue: str | None,
    category: str | None,
    older_than: float | None,
    group: str | None,
    *,
    require: bool,
) -> Filters:
    """The selection the options describe; ids or filters, not both (usage errors)."""
    filters = (queue, category, older_than, group)
    if execution_ids and any(f is not None for f in filters):
        raise click.UsageError("give ids or filters, not both")
    if require and not execution_ids and all(f is None for f in filters):
        raise click.UsageError(
            "say which entries: execution or task ids, or --queue/--category/--older-than/--group"
        )
    return Filters(tuple(execution_ids), queue, category, older_than, group)


async def chosen(backend: Backend, filters: Filters) -> tuple[list[Execution], int | None]:
    """The dead letters ``filters`` select, and how many match in all. Each id may be an
    execution's (its dead letter) or a task's (all of its dead letters), whole or its
    start; ids that are not dead letters are an error, as are a group or a queue that
    match nothing at all."""
    if filters.group is not None:
        group = await one(backend, filters.group, ("group",))
        filters = replace(filters, group=group.id)
    if not filters.execution_ids:
        listed = await backend.dead_letters(filters)
        if not listed.items and filters.queue and not await backend.queues([filters.queue]):
            raise NotFoundError(f"no executions in queue {filters.queue!r}")
        return listed.items, listed.total
    wanted: list[str] = []
    for text in filters.execution_ids:
        match = await one(backend, text, ("execution", "task"))
        if match.kind == "execution":
            wanted.append(match.id)
            continue
        dead = [e.execution_id for e in await backend.timeline(match.id) if e.status == "dlq"]
        if not dead:
            raise click.ClickException(f"task {match.id} has no dead letter")
        wanted += dead
    wanted = list(dict.fromkeys(wanted))
    found = await backend.dead_letters(Filters(tuple(wanted), limit=len(wanted)))
    missing = sorted(set(wanted) - {e.execution_id for e in found.items})
    if missing:
        raise click.ClickException(f"not in the dead-letter queue: {', '.join(missing)}")
    return found.items, found.total


def summary(
    results: list[dict[str, Any]], verb: str, dry_run: bool, as_json: bool, *, named: bool
) -> None:
    """Each entry's outcome and the counts; exit 1 when something was refused or failed,
    or when the operator named something and nothing matched."""
    if as_json:
        emit_json({"dryRun": dry_run, "results": results})
    else:
        table(
            results,
            [
                ("executionId", "EXECUTION"),
                ("taskId", "TASK"),
                ("outcome", "OUTCOME"),
                ("detail", "DETAIL"),
            ],
        )
        counts: dict[str, int] = {}
        for row in results:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        done = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing"
        click.echo(f"{'dry run: ' if dry_run else ''}{verb}: {done}")
    if not results and named:
        raise click.ClickException("nothing matched: no dead letter of what was named")
    if any(row["outcome"] in ("refused", "failed") for row in results):
        raise SystemExit(1)
