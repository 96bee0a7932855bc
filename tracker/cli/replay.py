"""``tracker replay``: run dead letters again as a durable job (start, with a dry run, a
rate and a canary), watch it (status, list) and steer it (pause, resume, cancel).

``tracker serve`` runs the jobs; ``--run`` runs one in this process instead, showing its
progress, for when no service is running."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from tracker.cli.acting import MOMENT, act, actor, by_option
from tracker.cli.dlq_selection import CATEGORIES
from tracker.cli.output import confirm, emit_json, table
from tracker.cli.params import DURATION, ID, json_option, yes_option
from tracker.cli.replay_output import finish, item_row, job_row, run_here
from tracker.operations import replays
from tracker.operations.pages import MAX_LIMIT
from tracker.operations.replay_jobs import OUTCOMES, STATES, ReplayJob, ReplaySelection, freeze

JOB_COLUMNS = [
    ("id", "REPLAY"),
    ("state", "STATE"),
    ("matched", "MATCHED"),
    ("republished", "REPUBLISHED"),
    ("succeeded", "SUCCEEDED"),
    ("failed", "FAILED"),
    ("skipped", "SKIPPED"),
    ("createdBy", "BY"),
    ("createdAt", "CREATED"),
    ("reason", "REASON"),
]
ITEM_COLUMNS = [
    ("position", "#"),
    ("taskId", "TASK"),
    ("executionId", "DEAD LETTER"),
    ("outcome", "OUTCOME"),
    ("newExecutionId", "NEW EXECUTION"),
    ("detail", "DETAIL"),
]
reason_option = click.option("--reason", "-r", help="Why (written to the audit log).")
run_option = click.option(
    "--run", is_flag=True, help="Run the job in this process (when no `tracker serve` does)."
)


@click.group()
def replay() -> None:
    """Replays: dead letters run again as one durable job, with a dry run, a rate, a canary
    and progress; paused, resumed, cancelled; every action audited."""


@replay.command()
@click.option("--group", "-g", "group_id", type=ID, help="The dead letters of this failure group.")
@click.option("--queue", "-q", type=ID, help="The dead letters of this queue.")
@click.option("--status", type=click.Choice(["dlq", "archived"]), default="dlq", show_default=True)
@click.option("--category", "-c", type=click.Choice(CATEGORIES), help="Only this category.")
@click.option("--since", type=MOMENT, help="Enqueued since (2h, 7d, or an ISO time).")
@click.option("--until", type=MOMENT, help="Enqueued until (2h, 7d, or an ISO time).")
@click.option("--task-id", "task_ids", type=ID, multiple=True, help="This task (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only count what would run.")
@click.option("--reason", "-r", required=True, help="Why these run again (audited).")
@click.option("--rate", type=click.FloatRange(0.001, 1000), help="At most this many per second.")
@click.option("--canary", type=click.IntRange(1, 1000), help="Run these first, then judge.")
@click.option(
    "--canary-max-failures",
    type=click.FloatRange(0, 1),
    help="Stop after the canary if more than this share of it fails again (default 0).",
)
@click.option(
    "--follow",
    type=DURATION,
    default="10m",
    show_default=True,
    help="How long to wait for the new executions to end after the last is published "
    "(the job completes earlier once they all have).",
)
@run_option
@by_option
@yes_option
@json_option
@click.pass_context
def start(
    ctx: click.Context,
    group_id: str | None,
    queue: str | None,
    status: str,
    category: str | None,
    since: datetime | None,
    until: datetime | None,
    task_ids: tuple[str, ...],
    dry_run: bool,
    reason: str,
    rate: float | None,
    canary: int | None,
    canary_max_failures: float | None,
    follow: float,
    run: bool,
    by: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Start a replay of the dead letters selected (one item per task, frozen now)."""
    if canary_max_failures is not None and canary is None:
        raise click.UsageError("--canary-max-failures needs --canary")
    if dry_run and run:
        raise click.UsageError("--dry-run and --run do not go together")
    who = actor(by)
    try:
        selection = ReplaySelection(
            group_id=group_id,
            queue=queue,
            status=status,  # type: ignore[arg-type]
            since=since,
            until=until,
            task_ids=task_ids,
            category=category,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None

    async def work() -> ReplayJob:
        if not dry_run:
            count = len(await freeze(selection))
            if count == 0:
                raise click.ClickException("nothing to replay: the selection matches no task")
            confirm(yes, f"Replay {count} task(s)?")
        job = await replays.create_replay(
            selection,
            actor=who,
            reason=reason,
            dry_run=dry_run,
            rate_per_second=rate,
            canary_size=canary,
            canary_max_failure_share=canary_max_failures,
            follow_seconds=follow,
        )
        return await run_here(ctx, job.id, as_json) if run else job

    job = act(ctx, work)
    if not run and not dry_run and not as_json:
        click.echo(f"replay {job.id} created: {job.matched} task(s); `tracker serve` runs it")
        click.echo(f"watch it: tracker replay status {job.id}", err=True)
        return
    finish(job, as_json)


@replay.command()
@click.argument("replay_id", type=ID)
@click.option("--items", "show_items", is_flag=True, help="List its items too.")
@click.option("--outcome", type=click.Choice(OUTCOMES), help="Only items with this outcome.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue the items after the page that printed it.")
@json_option
@click.pass_context
def status(
    ctx: click.Context,
    replay_id: str,
    show_items: bool,
    outcome: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """A job's state, counts and (with --items) its items."""

    async def work() -> tuple[ReplayJob, Any]:
        job = await replays.get_replay(replay_id)
        wanted = show_items or outcome is not None or cursor is not None
        items = (
            await replays.replay_items(replay_id, outcome=outcome, cursor=cursor, limit=limit)
            if wanted
            else None
        )
        return job, items

    job, items = act(ctx, work)
    rows = None if items is None else [item_row(item) for item in items.items]
    if as_json:
        record = job_row(job)
        if items is not None:
            record["items"] = rows
            record["nextCursor"] = items.next_cursor
        emit_json(record)
        return
    for key, value in job_row(job).items():
        click.echo(f"{key:>22}: {value if value is not None else '-'}")
    if rows is not None:
        click.echo("")
        table(rows, ITEM_COLUMNS)
        if items.next_cursor:
            click.echo(f"more: --cursor {items.next_cursor}")


@replay.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after the page that printed it.")
@json_option
@click.pass_context
def list_jobs(
    ctx: click.Context, state: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Replay jobs, newest first."""
    page = act(
        ctx,
        lambda: replays.list_replays(state=state, cursor=cursor, limit=limit),  # type: ignore[arg-type]
    )
    rows = [job_row(job) for job in page.items]
    if as_json:
        emit_json({"items": rows, "nextCursor": page.next_cursor})
        return
    table(rows, JOB_COLUMNS)
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def _steer(name: str, help_text: str, can_run: bool) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("replay_id", type=ID)
    @reason_option
    @by_option
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context,
        replay_id: str,
        reason: str | None,
        by: str | None,
        as_json: bool,
        run: bool = False,
    ) -> None:
        who = actor(by)
        operation = getattr(replays, name)

        async def work() -> ReplayJob:
            job: ReplayJob = await operation(replay_id, who, reason=reason)
            return await run_here(ctx, job.id, as_json) if run else job

        finish(act(ctx, work), as_json)

    return run_option(command) if can_run else command


for _name, _help, _can_run in (
    ("pause", "Pause a job after its current item. Audited.", False),
    ("resume", "Go on with a paused job, or one its canary stopped. Audited.", True),
    ("cancel", "Cancel a job: what is not republished yet is skipped. Audited.", False),
):
    replay.add_command(_steer(_name, _help, _can_run))
