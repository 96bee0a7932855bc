"""What the ``tracker dlq`` commands share: the options that select dead letters, the
selection itself, and the rows and summary they print."""

from __future__ import annotations

from typing import Any

import click

from tracker.cli.output import emit_json, table
from tracker.cli.params import DURATION, ID
from tracker.constants import DEFAULT_ARCHIVED_RETENTION_SECONDS
from tracker.models import TaskTracker
from tracker.operations import dead_letters as operations
from tracker.operations.dead_letters import Selection

CATEGORIES = ["transient", "validation", "processing", "infrastructure", "partner_api", "unknown"]


def filter_options(func: Any, *, with_group: bool = True) -> Any:
    """--queue, --category, --older-than and (to select) --group."""
    options = [
        click.option("--queue", "-q", type=ID, help="Only dead letters of this queue."),
        click.option(
            "--category", "-c", type=click.Choice(CATEGORIES), help="Only this error category."
        ),
        click.option(
            "--older-than", type=DURATION, help="Only entries enqueued longer ago (e.g. 7d)."
        ),
    ]
    if with_group:
        options.append(
            click.option(
                "--group",
                "-g",
                type=ID,
                help="Only this failure group's (see `tracker groups list`).",
            )
        )
    for option in reversed(options):
        func = option(func)
    return func


def filters_without_group(func: Any) -> Any:
    return filter_options(func, with_group=False)


by_option = click.option(
    "--by",
    "archived_by",
    type=ID,
    help="Who did it (archivedBy and the audit log; default: TRACKER_ACTOR, else you).",
)
retention_option = click.option(
    "--retention",
    type=DURATION,
    default=DEFAULT_ARCHIVED_RETENTION_SECONDS,
    help="Keep the archived entries this long (default 30d).",
)


def entry_row(doc: TaskTracker) -> dict[str, Any]:
    return {
        "executionId": doc.execution_id,
        "taskId": doc.task_id,
        "queueName": doc.queue_name,
        "retryCount": doc.retry_count,
        "errorCategory": doc.error_category.value if doc.error_category else None,
        "errorType": doc.error_type,
        "errorMessage": doc.error_message,
        "enqueuedAt": doc.enqueued_at,
        "failedAt": doc.failed_at,
        "group": doc.group_id,
    }


ENTRY_COLUMNS = [
    ("executionId", "EXECUTION"),
    ("queueName", "QUEUE"),
    ("errorCategory", "CATEGORY"),
    ("failedAt", "FAILED"),
    ("group", "GROUP"),
    ("errorMessage", "MESSAGE"),
]


async def selected(selection: Selection) -> list[TaskTracker]:
    if selection.by_id:
        missing = await operations.missing_ids(selection.execution_ids)
        if missing:
            raise click.ClickException(f"not in the dead-letter queue: {', '.join(missing)}")
    return [entry async for entry in operations.select(selection)]


def selection_of(
    execution_ids: tuple[str, ...],
    queue: str | None,
    category: str | None,
    older_than: float | None,
    group: str | None,
    *,
    require: bool,
) -> Selection:
    filters = (queue, category, older_than, group)
    if execution_ids and any(f is not None for f in filters):
        raise click.UsageError("give execution ids or filters, not both")
    if require and not execution_ids and all(f is None for f in filters):
        raise click.UsageError(
            "say which entries: execution ids, or --queue/--category/--older-than/--group"
        )
    return Selection(tuple(execution_ids), queue, category, older_than, group)


def summary(results: list[dict[str, Any]], verb: str, dry_run: bool, as_json: bool) -> None:
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
    if any(row["outcome"] in ("refused", "failed") for row in results):
        raise SystemExit(1)
