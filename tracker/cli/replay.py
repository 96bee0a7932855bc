"""``tracker replay``: run dead letters again as a durable job (start, with a dry run, a
rate and a canary), watch it (status, list) and steer it (pause, resume, cancel).

``tracker serve`` runs the jobs; ``--run`` runs one in this process instead (on MongoDB),
showing its progress, for when no service is running; through a service it follows the job
the service runs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from tracker.cli.acting import MOMENT, by_option
from tracker.cli.backend import Backend
from tracker.cli.dlq_selection import CATEGORIES, GroupId
from tracker.cli.operating import operate
from tracker.cli.output import confirm, emit_json, shown_of, table
from tracker.cli.params import DURATION, ID, json_option, yes_option
from tracker.cli.replay_output import finish, progress_printer
from tracker.cli.resolve import one
from tracker.cli.rows import ITEM_COLUMNS, JOB_COLUMNS, item_row, job_row
from tracker.operations.pages import MAX_LIMIT as MAX_PAGE
from tracker.operations.replay_jobs import OUTCOMES, STATES

if TYPE_CHECKING:
    from tracker.web.api.schemas import ListOf, Replay, ReplayItemOut

reason_option = click.option("--reason", "-r", help="Why (written to the audit log).")
run_option = click.option(
    "--run",
    is_flag=True,
    help="Run the job in this process (when no `tracker serve` does); through a service, "
    "follow it.",
)
page_limit = click.option(
    "--limit", type=click.IntRange(1, MAX_PAGE), default=50, show_default=True
)


@click.group()
def replay() -> None:
    """Replays: dead letters run again as one durable job, with a dry run, a rate, a canary
    and progress; paused, resumed, cancelled; every action audited."""


@replay.command()
@click.option("--group", "-g", "group_id", type=GroupId(), help="The dead letters of this group.")
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
    from pydantic import ValidationError

    from tracker.web.api.schemas import ReplayRequest

    if canary_max_failures is not None and canary is None:
        raise click.UsageError("--canary-max-failures needs --canary")
    if dry_run and run:
        raise click.UsageError("--dry-run and --run do not go together")
    if not (group_id or queue or task_ids):
        raise click.UsageError("say what to replay: --group, --queue or --task-id")
    fields: dict[str, Any] = {
        "queue": queue,
        "status": status,
        "since": since,
        "until": until,
        "task_ids": list(task_ids),
        "category": category,
        "reason": reason,
        "dry_run": dry_run,
        "rate_per_second": rate,
        "canary_size": canary,
        "canary_max_failure_share": canary_max_failures,
        "follow_seconds": follow,
    }
    try:
        ReplayRequest(**fields)
    except ValidationError as error:
        raise click.UsageError(_first(error)) from None

    async def work(backend: Backend) -> Replay:
        actor = await backend.actor(by)
        chosen = {**fields}
        if group_id is not None:
            chosen["group_id"] = (await one(backend, group_id, ("group",))).id
        request = ReplayRequest(**{k: v for k, v in chosen.items() if v is not None})
        if not dry_run:
            count = await backend.preview_replay(request)
            if count == 0:
                raise click.ClickException("nothing to replay: the selection matches no task")
            confirm(yes, f"Replay {count} task(s)?")
        job = await backend.start_replay(request, actor)
        return await backend.run_replay(job.id, progress_printer(as_json)) if run else job

    job = operate(ctx, work)
    if not run and not dry_run and not as_json:
        click.echo(f"replay {job.id} created: {job.matched} task(s); `tracker serve` runs it")
        click.echo(f"watch it: tracker replay status {job.id}", err=True)
        return
    finish(job, as_json)


def _first(error: Any) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem.get('msg', 'invalid')}"


@replay.command()
@click.argument("replay_id", metavar="ID", type=ID)
@click.option("--items", "show_items", is_flag=True, help="List its items too.")
@click.option("--outcome", type=click.Choice(OUTCOMES), help="Only items with this outcome.")
@page_limit
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
    """A job's state, counts and (with --items) its items. ID: the job's id or its start."""

    async def work(backend: Backend) -> tuple[Replay, ListOf[ReplayItemOut] | None]:
        job = await backend.replay((await one(backend, replay_id, ("replay",))).id)
        wanted = show_items or outcome is not None or cursor is not None
        items = (
            await backend.replay_items(job.id, outcome=outcome, cursor=cursor, limit=limit)
            if wanted
            else None
        )
        return job, items

    job, items = operate(ctx, work)
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
    if items is not None and rows is not None:
        click.echo("")
        table(rows, ITEM_COLUMNS)
        if items.next_cursor:
            click.echo(f"more: --cursor {items.next_cursor}")


@replay.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@page_limit
@click.option("--cursor", help="Continue after the page that printed it.")
@json_option
@click.pass_context
def list_jobs(
    ctx: click.Context, state: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Replay jobs, newest first."""
    page = operate(ctx, lambda backend: backend.replays(state=state, cursor=cursor, limit=limit))
    rows = [job_row(job) for job in page.items]
    if as_json:
        emit_json({"items": rows, "nextCursor": page.next_cursor, "total": page.total})
        return
    table(rows, JOB_COLUMNS)
    if page.next_cursor:
        shown_of(len(rows), page.total)
        click.echo(f"more: --cursor {page.next_cursor}")


def _steer(name: str, help_text: str, can_run: bool) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("replay_id", metavar="ID", type=ID)
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
        async def work(backend: Backend) -> Replay:
            actor = await backend.actor(by)
            found = await one(backend, replay_id, ("replay",))
            job = await backend.steer_replay(name, found.id, actor, reason)
            return await backend.run_replay(job.id, progress_printer(as_json)) if run else job

        finish(operate(ctx, work), as_json)

    return run_option(command) if can_run else command


for _name, _help, _can_run in (
    ("pause", "Pause a job after its current item (ID: its id or its start). Audited.", False),
    ("resume", "Go on with a paused job, or one its canary stopped. Audited.", True),
    ("cancel", "Cancel a job: what is not republished yet is skipped. Audited.", False),
):
    replay.add_command(_steer(_name, _help, _can_run))
