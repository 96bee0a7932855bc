"""``tracker dlq`` commands that change dead letters: retry, archive, auto-archive, purge,
import."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import click

from tracker.cli.backend import Backend, Filters
from tracker.cli.dlq_selection import (
    by_option,
    chosen,
    filter_options,
    filters_of,
    retention_option,
    summary,
)
from tracker.cli.operating import operate
from tracker.cli.output import confirm, emit_json
from tracker.cli.params import DURATION, ID, dry_run_option, json_option, yes_option
from tracker.cli.replay_output import progress_printer
from tracker.cli.rows import entry_row
from tracker.operations.replay_jobs import MAX_TASK_IDS as MAX_RETRY
from tracker.operations.republish import MANUAL_RETRY_REASON

if TYPE_CHECKING:
    from tracker.web.api.schemas import ReplayItemOut


@click.command()
@click.argument("execution_ids", metavar="[ID]...", nargs=-1, type=ID)
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
    """Retry dead letters as a replay job: each task's newest selected dead letter runs
    again as a new execution (its other ones are archived with it), then is archived
    ("Manual retry initiated"), so the retry chain shows it. IDs: executions or tasks (all
    their dead letters), whole or their start. A task that already has an active execution
    is refused. On MongoDB the job runs in this command; through a service, the service
    runs it and the command follows it. Audited (`tracker audit`, `tracker replay status`)."""
    filters = filters_of(execution_ids, queue, category, older_than, group, require=True)

    async def work(backend: Backend) -> list[dict[str, Any]]:
        from tracker.web.api.schemas import ReplayRequest

        actor = await backend.actor(archived_by)
        entries, _ = await chosen(backend, filters)
        if dry_run or not entries:
            return [{**entry_row(e), "outcome": "would retry", "detail": ""} for e in entries]
        if len(entries) > MAX_RETRY:
            raise click.ClickException(
                f"{len(entries)} dead letters: retry at most {MAX_RETRY} at once, or use "
                "`tracker replay start`"
            )
        confirm(yes, f"Retry {len(entries)} dead letter(s)?")
        request = ReplayRequest(
            execution_ids=[e.execution_id for e in entries],
            reason=MANUAL_RETRY_REASON,
            follow_seconds=0,
            archived_retention_seconds=retention,
        )
        job = await backend.start_replay(request, actor)
        await backend.run_replay(job.id, progress_printer(as_json))
        return [_retried(item) for item in await _items(backend, job.id)]

    summary(operate(ctx, work), "retried", dry_run, as_json, named=filters.named)


async def _items(backend: Backend, job_id: str) -> list[ReplayItemOut]:
    items: list[ReplayItemOut] = []
    cursor = None
    while True:
        page = await backend.replay_items(job_id, outcome=None, cursor=cursor, limit=500)
        items += page.items
        if (cursor := page.next_cursor) is None:
            return items


def _retried(item: ReplayItemOut) -> dict[str, Any]:
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
@click.argument("execution_ids", metavar="[ID]...", nargs=-1, type=ID)
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
    """Archive dead letters with a reason (no retry). IDs: executions or tasks (all their
    dead letters), whole or their start."""
    filters = filters_of(execution_ids, queue, category, older_than, group, require=True)
    results = operate(
        ctx,
        lambda backend: _archive(backend, filters, reason, archived_by, retention, dry_run, yes),
    )
    summary(results, "archived", dry_run, as_json, named=filters.named)


async def _archive(
    backend: Backend,
    filters: Filters,
    reason: str,
    archived_by: str | None,
    retention: float | None,
    dry_run: bool,
    yes: bool,
    default_by: str | None = None,
) -> list[dict[str, Any]]:
    actor = await backend.actor(archived_by, default_by)
    entries, _ = await chosen(backend, filters)
    if dry_run or not entries:
        return [{**entry_row(e), "outcome": "would archive", "detail": reason} for e in entries]
    confirm(yes, f"Archive {len(entries)} dead letter(s)?")
    done = await backend.archive(
        [e.execution_id for e in entries], filters, reason=reason, actor=actor, retention=retention
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
    help="The archivedBy recorded (default on MongoDB: this command and host; through a "
    "service: your token's name).",
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
    from tracker.service.sweeper import auto_archive_reason

    filters = Filters((), queue, None, older_than, None)
    default_by = f"tracker-dlq-auto-archive@{socket.gethostname()}"
    reason = auto_archive_reason(older_than)
    results = operate(
        ctx,
        lambda backend: _archive(
            backend, filters, reason, archived_by, retention, dry_run, yes, default_by
        ),
    )
    summary(results, "archived", dry_run, as_json, named=False)


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

    async def work(backend: Backend) -> int:
        actor = await backend.actor(None)
        counted = await backend.purge(archived_older_than, dry_run=True, actor=actor)
        if dry_run or counted.matched == 0:
            return counted.matched
        many = counted.matched
        confirm(yes, f"Delete {many} archived entr{'y' if many == 1 else 'ies'} for good?")
        done = await backend.purge(archived_older_than, dry_run=False, actor=actor)
        return done.deleted

    count = operate(ctx, work)
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
    record (delivery limit reached while MongoDB was down), and take them off that queue.
    Copies of what the tracker knows (recorded, archived or purged) are only removed."""
    names = list(dict.fromkeys(queues))

    async def work(backend: Backend) -> dict[str, dict[str, Any]]:
        if not dry_run:
            confirm(yes, f"Import untracked dead letters of {', '.join(names)}?")
        report = await backend.import_queues(names, dry_run=dry_run)
        return {queue: counts.model_dump() for queue, counts in report.queues.items()}

    report = operate(ctx, work)
    if as_json:
        emit_json({"dryRun": dry_run, "queues": report})
        return
    verb = "would import" if dry_run else "imported"
    for queue, counts in report.items():
        click.echo(
            f"{queue}: {verb} {counts['imported']}, already tracked {counts['already_tracked']}"
        )
