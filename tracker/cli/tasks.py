"""``tracker status``, ``tracker stats`` and ``tracker stuck``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click
from beanie import SortDirection

from tracker.cli.app import run, state
from tracker.cli.output import confirm, emit_json, progress, show, table
from tracker.cli.params import DURATION, ID, dry_run_option, json_option, yes_option
from tracker.cli.publishing import cli_publisher, operator_outcomes
from tracker.clock import utcnow
from tracker.lifecycle import TaskStatus
from tracker.models import TaskTracker
from tracker.store import connection


def execution_row(doc: TaskTracker) -> dict[str, Any]:
    return {
        "retryCount": doc.retry_count,
        "executionId": doc.execution_id,
        "queueName": doc.queue_name,
        "status": doc.status.value,
        "enqueuedAt": doc.enqueued_at,
        "processingStartedAt": doc.processing_started_at,
        "finishedAt": doc.completed_at or doc.failed_at,
        "archivedAt": doc.archived_at,
        "errorCategory": doc.error_category.value if doc.error_category else None,
        "errorMessage": doc.error_message,
    }


@click.command()
@click.argument("task_id", type=ID)
@json_option
@click.pass_context
def status(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show the retry chain of TASK_ID: every attempt, oldest first."""
    chain = run(ctx, lambda: TaskTracker.find_retry_chain(task_id))
    if not chain:
        raise click.ClickException(f"no executions of task {task_id!r}")
    rows = [execution_row(doc) for doc in chain]
    if as_json:
        emit_json({"taskId": task_id, "executions": rows})
        return
    click.echo(f"task {show(task_id)}: {len(chain)} execution(s), now {chain[-1].status.value}")
    table(
        rows,
        [
            ("retryCount", "#"),
            ("executionId", "EXECUTION"),
            ("status", "STATUS"),
            ("enqueuedAt", "ENQUEUED"),
            ("processingStartedAt", "STARTED"),
            ("finishedAt", "FINISHED"),
            ("errorCategory", "CATEGORY"),
            ("errorMessage", "MESSAGE"),
        ],
    )


@click.command()
@click.option(
    "--queue", "-q", "queues", type=ID, multiple=True, help="Only this queue (repeatable)."
)
@json_option
@click.pass_context
def stats(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Executions per status per queue."""

    async def collect() -> dict[str, dict[str, int]]:
        names = list(queues) or sorted(await connection.collection().distinct("queueName"))
        return {name: await TaskTracker.get_queue_stats(name) for name in names}

    result = run(ctx, collect)
    if as_json:
        emit_json(result)
        return
    statuses = [s.value for s in TaskStatus]
    table(
        [{"queue": name, **counts} for name, counts in result.items()],
        [("queue", "QUEUE"), *((s, s.upper()) for s in statuses)],
    )


@click.command()
@click.option("--queue", "-q", type=ID, help="Only this queue.")
@click.option(
    "--older-than",
    type=DURATION,
    default="30m",
    show_default=True,
    help="Processing for longer than this.",
)
@click.option(
    "--fail",
    "fail_them",
    is_flag=True,
    help="Fail them as timed out (retry or dead-letter by the usual policy; publishes).",
)
@dry_run_option
@yes_option
@json_option
@click.pass_context
def stuck(
    ctx: click.Context,
    queue: str | None,
    older_than: float,
    fail_them: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """List executions stuck in processing; with --fail, fail them as timed out."""
    current = state(ctx)

    async def work() -> dict[str, Any]:
        query: dict[str, Any] = {
            "status": TaskStatus.PROCESSING.value,
            "processingStartedAt": {"$lt": utcnow() - timedelta(seconds=older_than)},
        }
        if queue:
            query = {"queueName": queue, **query}
        found = (
            await TaskTracker.find(query)
            .sort([("processingStartedAt", SortDirection.ASCENDING)])
            .to_list()
        )
        failed: list[str] = []
        if fail_them and found and not dry_run:
            confirm(yes, f"Fail {len(found)} stuck execution(s) as timed out?")
            async with cli_publisher(current.settings) as publish:
                with progress(found, len(found), "failing", as_json) as bar:
                    for doc in bar:
                        outcomes = operator_outcomes(doc.queue_name, older_than)
                        decision = await outcomes.expire(doc.execution_id, doc.claim_token)
                        for message in decision.publish if decision else ():
                            await publish(message)
                        if decision is not None:
                            failed.append(doc.execution_id)
        return {
            "stuck": [
                {
                    **execution_row(doc),
                    "claimedBy": doc.claimed_by,
                    "timeoutSeconds": doc.timeout_seconds,
                }
                for doc in found
            ],
            "failed": failed,
            "dryRun": dry_run,
        }

    result = run(ctx, work)
    if as_json:
        emit_json(result)
        return
    table(
        result["stuck"],
        [
            ("executionId", "EXECUTION"),
            ("queueName", "QUEUE"),
            ("processingStartedAt", "STARTED"),
            ("claimedBy", "WORKER"),
            ("timeoutSeconds", "TIMEOUT"),
        ],
    )
    if fail_them:
        verb = "would fail" if dry_run else "failed"
        count = len(result["stuck"]) if dry_run else len(result["failed"])
        click.echo(f"{verb} {count} execution(s)")
