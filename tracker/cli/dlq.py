"""``tracker dlq``: list, show, retry, archive, auto-archive, purge and import dead letters."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import click

from tracker.cli.app import (
    DURATION,
    confirm,
    dry_run_option,
    emit_json,
    json_option,
    progress,
    run,
    state,
    table,
    yes_option,
)
from tracker.cli.publishing import cli_channel, cli_publisher
from tracker.constants import DEFAULT_ARCHIVED_RETENTION_SECONDS
from tracker.models import TaskTracker
from tracker.operations import dead_letters as operations
from tracker.operations.dead_letters import Selection
from tracker.service.sweeper import auto_archive_reason
from tracker.store.executions import archive as archive_execution


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"


CATEGORIES = ["transient", "validation", "processing", "infrastructure", "partner_api", "unknown"]


def filter_options(func: Any, *, with_group: bool = True) -> Any:
    """--queue, --category, --older-than and (to select) --group."""
    options = [
        click.option("--queue", "-q", help="Only dead letters of this queue."),
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
                "--group", "-g", help="Only this error signature (see `dlq list --group`)."
            )
        )
    for option in reversed(options):
        func = option(func)
    return func


def filters_without_group(func: Any) -> Any:
    return filter_options(func, with_group=False)


by_option = click.option(
    "--by", "archived_by", default=_default_user, help="Who did it (archivedBy; default: you)."
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
        "group": operations.signature(doc),
    }


ENTRY_COLUMNS = [
    ("executionId", "EXECUTION"),
    ("queueName", "QUEUE"),
    ("errorCategory", "CATEGORY"),
    ("failedAt", "FAILED"),
    ("group", "GROUP"),
    ("errorMessage", "MESSAGE"),
]


async def _selected(selection: Selection) -> list[TaskTracker]:
    if selection.by_id:
        missing = await operations.missing_ids(selection.execution_ids)
        if missing:
            raise click.ClickException(f"not in the dead-letter queue: {', '.join(missing)}")
    return [entry async for entry in operations.select(selection)]


def _selection(
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


@click.group()
def dlq() -> None:
    """Triage, retry and archive dead letters (executions in status dlq)."""


@dlq.command("list")
@filters_without_group
@click.option(
    "--group", "-g", "grouped", is_flag=True, help="Group entries by cause (error signature)."
)
@click.option("--limit", default=100, show_default=True, help="At most this many entries.")
@json_option
@click.pass_context
def list_entries(
    ctx: click.Context,
    queue: str | None,
    category: str | None,
    older_than: float | None,
    grouped: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, newest first; --group groups them by cause (category, exception
    type and message shape) with counts and first/last seen."""
    selection = Selection((), queue, category, older_than, limit=None if grouped else limit)
    if grouped:
        groups = run(ctx, lambda: operations.group(selection))
        rows = [g.as_dict() for g in groups]
        if as_json:
            emit_json(rows)
            return
        table(
            [{**row, "queues": ",".join(row["queues"])} for row in rows],
            [
                ("group", "GROUP"),
                ("count", "COUNT"),
                ("category", "CATEGORY"),
                ("errorType", "TYPE"),
                ("firstSeen", "FIRST SEEN"),
                ("lastSeen", "LAST SEEN"),
                ("queues", "QUEUES"),
                ("message", "MESSAGE"),
            ],
        )
        return
    entries = run(ctx, lambda: _selected(selection))
    rows = [entry_row(doc) for doc in entries]
    if as_json:
        emit_json(rows)
        return
    table(rows, ENTRY_COLUMNS)


@dlq.command()
@click.argument("execution_id")
@json_option
@click.pass_context
def show(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """The full record of one execution: fields, history, payload and stack."""
    doc = run(ctx, lambda: TaskTracker.find_execution(execution_id))
    if doc is None:
        raise click.ClickException(f"no execution {execution_id!r}")
    record = doc.model_dump(by_alias=True, exclude={"id", "revision_id"}, mode="json")
    record["group"] = operations.signature(doc)
    if as_json:
        emit_json(record)
        return
    for key in (
        "executionId",
        "taskId",
        "queueName",
        "status",
        "retryCount",
        "maxRetries",
        "errorCategory",
        "errorType",
        "errorMessage",
        "group",
        "enqueuedAt",
        "processingStartedAt",
        "failedAt",
        "archivedAt",
        "archivedReason",
        "archivedBy",
        "nextExecutionId",
        "claimedBy",
    ):
        if record.get(key) is not None:
            click.echo(f"{key:>20}: {record[key]}")
    click.echo("\nhistory:")
    for entry in record["history"]:
        click.echo(f"  {entry['at']}  {entry['status']:<10} {entry.get('message') or ''}")
    click.echo("\npayload:")
    click.echo(json.dumps(record.get("payload"), indent=2, ensure_ascii=False))
    if record.get("metadata"):
        click.echo("\nmetadata:")
        click.echo(json.dumps(record["metadata"], indent=2, ensure_ascii=False))
    if record.get("errorStack"):
        click.echo("\nstack:")
        click.echo(record["errorStack"])


def _summary(results: list[dict[str, Any]], verb: str, dry_run: bool, as_json: bool) -> None:
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


@dlq.command()
@click.argument("execution_ids", nargs=-1)
@filter_options
@by_option
@retention_option
@dry_run_option
@yes_option
@json_option
@click.pass_context
def retry(
    ctx: click.Context,
    execution_ids: tuple[str, ...],
    queue: str | None,
    category: str | None,
    older_than: float | None,
    group: str | None,
    archived_by: str,
    retention: float,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Retry dead letters: each is archived ("Manual retry initiated") and a new execution of
    its task is enqueued and published, so the retry chain shows it. Refused for a task that
    already has an active execution."""
    selection = _selection(execution_ids, queue, category, older_than, group, require=True)
    current = state(ctx)

    async def work() -> list[dict[str, Any]]:
        entries = await _selected(selection)
        if dry_run or not entries:
            return [{**entry_row(e), "outcome": "would retry", "detail": ""} for e in entries]
        confirm(yes, f"Retry {len(entries)} dead letter(s)?")
        results = []
        async with cli_publisher(current.settings) as publish:
            with progress(entries, len(entries), "retrying", as_json) as bar:
                for entry in bar:
                    result = await operations.retry(
                        entry, publish, archived_by=archived_by, retention=retention
                    )
                    results.append(
                        {
                            "executionId": entry.execution_id,
                            "taskId": entry.task_id,
                            "outcome": result.outcome,
                            "newExecutionId": result.new_execution_id,
                            "detail": result.reason or result.new_execution_id,
                        }
                    )
        return results

    _summary(run(ctx, work), "retried", dry_run, as_json)


@dlq.command("archive")
@click.argument("execution_ids", nargs=-1)
@filter_options
@click.option("--reason", "-r", required=True, help="Why (archivedReason).")
@by_option
@retention_option
@dry_run_option
@yes_option
@json_option
@click.pass_context
def archive_command(
    ctx: click.Context,
    execution_ids: tuple[str, ...],
    queue: str | None,
    category: str | None,
    older_than: float | None,
    group: str | None,
    reason: str,
    archived_by: str,
    retention: float,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Archive dead letters with a reason (no retry)."""
    selection = _selection(execution_ids, queue, category, older_than, group, require=True)
    results = run(
        ctx,
        lambda: _archive(selection, reason, archived_by, retention, dry_run, yes, as_json),
    )
    _summary(results, "archived", dry_run, as_json)


async def _archive(
    selection: Selection,
    reason: str,
    archived_by: str,
    retention: float | None,
    dry_run: bool,
    yes: bool,
    quiet: bool,
) -> list[dict[str, Any]]:
    entries = await _selected(selection)
    if dry_run or not entries:
        return [{**entry_row(e), "outcome": "would archive", "detail": reason} for e in entries]
    confirm(yes, f"Archive {len(entries)} dead letter(s)?")
    results = []
    with progress(entries, len(entries), "archiving", quiet) as bar:
        for entry in bar:
            _, changed = await archive_execution(
                entry.execution_id, reason=reason, archived_by=archived_by, retention=retention
            )
            results.append(
                {
                    "executionId": entry.execution_id,
                    "taskId": entry.task_id,
                    "outcome": "archived" if changed else "already archived",
                    "detail": reason,
                }
            )
    return results


@dlq.command("auto-archive")
@click.option(
    "--older-than",
    type=DURATION,
    default="7d",
    show_default=True,
    help="Entries enqueued longer ago.",
)
@click.option("--queue", "-q", help="Only this queue.")
@click.option(
    "--by",
    "archived_by",
    default=lambda: f"tracker-dlq-auto-archive@{socket.gethostname()}",
    help="The archivedBy recorded (default: this command and host).",
)
@retention_option
@dry_run_option
@yes_option
@json_option
@click.pass_context
def auto_archive(
    ctx: click.Context,
    older_than: float,
    queue: str | None,
    archived_by: str,
    retention: float,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Archive dead letters older than --older-than (for cron), with the reason
    "Auto-archived after N days"."""
    selection = Selection((), queue, None, older_than, None)
    results = run(
        ctx,
        lambda: _archive(
            selection,
            auto_archive_reason(older_than),
            archived_by,
            retention,
            dry_run,
            yes,
            as_json,
        ),
    )
    _summary(results, "archived", dry_run, as_json)


@dlq.command()
@click.option(
    "--archived-older-than",
    type=DURATION,
    required=True,
    help="Delete archived entries archived longer ago (e.g. 30d).",
)
@dry_run_option
@yes_option
@json_option
@click.pass_context
def purge(
    ctx: click.Context, archived_older_than: float, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Delete archived entries for good (the TTL index does this by itself when retention is
    set; this is for entries archived without one)."""

    async def work() -> int:
        count = await operations.purge_archived(archived_older_than, dry_run=True)
        if dry_run or count == 0:
            return count
        confirm(yes, f"Delete {count} archived entr{'y' if count == 1 else 'ies'} for good?")
        return await operations.purge_archived(archived_older_than)

    count = run(ctx, work)
    if as_json:
        emit_json({"dryRun": dry_run, "deleted": 0 if dry_run else count, "matched": count})
    else:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {count} archived entries")


@dlq.command("import")
@click.option(
    "--queue", "-q", "queues", multiple=True, required=True, help="Work queue (repeatable)."
)
@dry_run_option
@yes_option
@json_option
@click.pass_context
def import_command(
    ctx: click.Context, queues: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Record as dead letters the messages RabbitMQ moved to QUEUE.dlq without a tracker
    record (delivery limit reached while MongoDB was down), and take them off that queue."""
    from tracker.rabbit.dlq_import import import_untracked

    current = state(ctx)

    async def work() -> dict[str, dict[str, int]]:
        if not dry_run:
            confirm(yes, f"Import untracked dead letters of {', '.join(queues)}?")
        report = {}
        async with cli_channel(current.settings) as channel:
            for queue in queues:
                result = await import_untracked(channel, queue, dry_run=dry_run)
                report[queue] = vars(result)
        return report

    report = run(ctx, work)
    if as_json:
        emit_json({"dryRun": dry_run, "queues": report})
        return
    verb = "would import" if dry_run else "imported"
    for queue, counts in report.items():
        click.echo(
            f"{queue}: {verb} {counts['imported']}, already tracked {counts['already_tracked']}"
        )
