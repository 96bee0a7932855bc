"""``tracker status``, ``tracker stats`` and ``tracker stuck``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from tracker.cli.backend import Backend
from tracker.cli.operating import operate
from tracker.cli.output import confirm, emit_json, show, shown_of, table
from tracker.cli.params import DURATION, ID, LIMIT, dry_run_option, json_option, yes_option
from tracker.cli.resolve import by_task, one
from tracker.cli.rows import STATUS_COLUMNS, STUCK_COLUMNS, execution_row, stuck_row
from tracker.lifecycle import TaskStatus

if TYPE_CHECKING:
    from tracker.web.api.schemas import ExecutionDetail


@click.command()
@click.argument("task_id", metavar="ID", type=ID)
@json_option
@click.pass_context
def status(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show the retry chain of a task, every attempt oldest first. ID: a task id, an
    execution id (its task's chain), or the start of either."""

    async def work(backend: Backend) -> tuple[str, list[ExecutionDetail]]:
        match = await one(backend, task_id, ("task", "execution"), key=by_task)
        task = match.task_id or match.id
        return task, await backend.timeline(task)

    task, chain = operate(ctx, work)
    rows = [execution_row(execution) for execution in chain]
    if as_json:
        emit_json({"taskId": task, "executions": rows})
        return
    click.echo(f"task {show(task)}: {len(chain)} execution(s), now {chain[-1].status}")
    table(rows, STATUS_COLUMNS)


@click.command()
@click.option(
    "--queue", "-q", "queues", type=ID, multiple=True, help="Only this queue (repeatable)."
)
@json_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Executions per status per queue."""
    found = operate(ctx, lambda backend: backend.queues(list(queues) or None))
    result = {queue.name: queue.counts for queue in found}
    missing = [name for name in dict.fromkeys(queues) if name not in result]
    if missing and not result:
        names = ", ".join(repr(show(name)) for name in missing)
        raise click.ClickException(f"no executions in queue {names}")
    if as_json:
        emit_json(result)
    else:
        statuses = [s.value for s in TaskStatus]
        table(
            [{"queue": name, **counts} for name, counts in result.items()],
            [("queue", "QUEUE"), *((s, s.upper()) for s in statuses)],
        )
    if missing:
        names = ", ".join(repr(show(name)) for name in missing)
        click.echo(f"no executions in queue {names}", err=True)


@click.command()
@click.option("--queue", "-q", type=ID, help="Only this queue.")
@click.option(
    "--older-than",
    type=DURATION,
    help="Only those processing for longer than this (they are listed once past their "
    "own deadline whatever it is).",
)
@click.option(
    "--limit", type=LIMIT, default=100, show_default=True, help="At most this many, longest first."
)
@click.option(
    "--fail",
    "fail_them",
    is_flag=True,
    help="Fail them as timed out after their own timeout (retry or dead-letter by the usual "
    "policy; publishes).",
)
@dry_run_option
@yes_option
@json_option
@click.pass_context
def stuck(
    ctx: click.Context,
    queue: str | None,
    older_than: float | None,
    limit: int,
    fail_them: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """List executions stuck in processing past their own deadline (the one the alert
    TrackerExecutionsStuck counts), longest first; with --fail, fail them as timed out."""

    async def work(backend: Backend) -> dict[str, Any]:
        found = await backend.stuck(queue, older_than, limit)
        results: list[dict[str, Any]] = []
        if fail_them and found.items and not dry_run:
            actor = await backend.actor(None)
            confirm(yes, f"Fail {len(found.items)} stuck execution(s) as timed out?")
            done = await backend.fail_stuck([e.execution_id for e in found.items], actor)
            results = [result.model_dump() for result in done]
        return {
            "stuck": [stuck_row(execution) for execution in found.items],
            "total": found.total,
            "failed": [r["execution_id"] for r in results if r["outcome"] != "skipped"],
            "results": results,
            "dryRun": dry_run,
        }

    result = operate(ctx, work)
    if as_json:
        emit_json(result)
        return
    table(result["stuck"], STUCK_COLUMNS)
    shown_of(len(result["stuck"]), result["total"])
    if fail_them:
        verb = "would fail" if dry_run else "failed"
        count = len(result["stuck"]) if dry_run else len(result["failed"])
        click.echo(f"{verb} {count} execution(s)")
