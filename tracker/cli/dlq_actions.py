"""``tracker dlq`` commands that change dead letters: retry, archive, auto-archive, purge,
import."""

from __future__ import annotations

import socket
from typing import Any

import click

from tracker.cli.app import run, state
from tracker.cli.dlq_selection import (
    by_option,
    entry_row,
    filter_options,
    retention_option,
    selected,
    selection_of,
    summary,
)
from tracker.cli.output import confirm, emit_json, progress
from tracker.cli.params import DURATION, ID, dry_run_option, json_option, yes_option
from tracker.cli.publishing import cli_channel, cli_publisher
from tracker.operations import dead_letters as operations
from tracker.operations import groups
from tracker.operations.dead_letters import Selection
from tracker.service.sweeper import auto_archive_reason
from tracker.store.executions import archive as archive_execution


@click.command()
@click.argument("execution_ids", nargs=-1, type=ID)
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
    selection = selection_of(execution_ids, queue, category, older_than, group, require=True)
    current = state(ctx)

    async def work() -> list[dict[str, Any]]:
        entries = await selected(selection)
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
        await groups.settle(e.group_id for e in entries if e.group_id)
        return results

    summary(run(ctx, work), "retried", dry_run, as_json)


@click.command("archive")
@click.argument("execution_ids", nargs=-1, type=ID)
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
    selection = selection_of(execution_ids, queue, category, older_than, group, require=True)
    results = run(
        ctx,
        lambda: _archive(selection, reason, archived_by, retention, dry_run, yes, as_json),
    )
    summary(results, "archived", dry_run, as_json)


async def _archive(
    selection: Selection,
    reason: str,
    archived_by: str,
    retention: float | None,
    dry_run: bool,
    yes: bool,
    quiet: bool,
) -> list[dict[str, Any]]:
    entries = await selected(selection)
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
    await groups.settle(e.group_id for e in entries if e.group_id)
    return results


@click.command("auto-archive")
@click.option(
    "--older-than",
    type=DURATION,
    default="7d",
    show_default=True,
    help="Entries enqueued longer ago.",
)
@click.option("--queue", "-q", type=ID, help="Only this queue.")
@click.option(
    "--by",
    "archived_by",
    type=ID,
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
    summary(results, "archived", dry_run, as_json)


@click.command()
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


@click.command("import")
@click.option(
    "--queue",
    "-q",
    "queues",
    type=ID,
    multiple=True,
    required=True,
    help="Work queue (repeatable).",
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
