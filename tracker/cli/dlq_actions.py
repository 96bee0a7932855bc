"""``tracker dlq`` commands that change dead letters: retry, archive, auto-archive, purge,
import."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import click

from tracker.cli.acting import actor
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
from tracker.cli.output import confirm, emit_json
from tracker.cli.params import DURATION, ID, dry_run_option, json_option, yes_option
from tracker.cli.publishing import cli_channel
from tracker.cli.replay_output import run_here
from tracker.operations import dead_letters as operations
from tracker.operations import replays
from tracker.operations.dead_letters import Selection
from tracker.operations.replay_jobs import MAX_TASK_IDS, ReplayItem, ReplaySelection
from tracker.operations.republish import MANUAL_RETRY_REASON
from tracker.service.sweeper import auto_archive_reason


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
    archived_by: str | None,
    retention: float,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Retry dead letters as a replay job run in this process: each task's newest selected
    dead letter runs again as a new execution (its other ones are archived with it), then is
    archived ("Manual retry initiated"), so the retry chain shows it. A task that already has
    an active execution is refused. Audited (`tracker audit`, `tracker replay status`)."""
    selection = selection_of(execution_ids, queue, category, older_than, group, require=True)
    who = actor(archived_by)

    async def work() -> list[dict[str, Any]]:
        entries = await selected(selection)
        if dry_run or not entries:
            return [{**entry_row(e), "outcome": "would retry", "detail": ""} for e in entries]
        if len(entries) > MAX_TASK_IDS:
            raise click.ClickException(
                f"{len(entries)} dead letters: retry at most {MAX_TASK_IDS} at once, or use "
                "`tracker replay start`"
            )
        confirm(yes, f"Retry {len(entries)} dead letter(s)?")
        job = await replays.create_replay(
            ReplaySelection(execution_ids=tuple(e.execution_id for e in entries)),
            actor=who,
            reason=MANUAL_RETRY_REASON,
            follow_seconds=0,
            archived_retention=retention,
        )
        await run_here(ctx, job.id, as_json)
        return [_retried(item) async for item in _items(job.id)]

    summary(run(ctx, work), "retried", dry_run, as_json)


async def _items(job_id: str) -> AsyncIterator[ReplayItem]:
    cursor = None
    while True:
        page = await replays.replay_items(job_id, cursor=cursor, limit=500)
        for item in page.items:
            yield item
        if (cursor := page.next_cursor) is None:
            return


def _retried(item: ReplayItem) -> dict[str, Any]:
    outcome = {"republished": "retried", "skipped": "refused"}.get(item.outcome, "failed")
    return {
        "executionId": item.execution_id,
        "taskId": item.task_id,
        "outcome": outcome,
        "newExecutionId": item.new_execution_id,
        "detail": item.detail or item.new_execution_id,
        "supersedes": list(item.supersedes),
    }


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
    archived_by: str | None,
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
    archived_by: str | None,
    retention: float | None,
    dry_run: bool,
    yes: bool,
    quiet: bool,
) -> list[dict[str, Any]]:
    who = actor(archived_by)
    entries = await selected(selection)
    if dry_run or not entries:
        return [{**entry_row(e), "outcome": "would archive", "detail": reason} for e in entries]
    confirm(yes, f"Archive {len(entries)} dead letter(s)?")
    done = await operations.archive_dead_letters(
        entries,
        actor=who,
        reason=reason,
        retention=retention,
        selection=_described(selection),
    )
    return [
        {
            "executionId": result.execution_id,
            "taskId": result.task_id,
            "outcome": "archived" if result.changed else "already archived",
            "detail": reason,
        }
        for result in done
    ]


def _described(selection: Selection) -> dict[str, Any]:
    described = {
        "execution_ids": list(selection.execution_ids)[:100],
        "queue": selection.queue,
        "category": selection.category,
        "older_than_seconds": selection.older_than,
        "group": selection.group,
    }
    return {key: value for key, value in described.items() if value not in (None, [])}


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
    archived_by: str | None,
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
        return await operations.purge_archived(archived_older_than, actor=actor())

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
