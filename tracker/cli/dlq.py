"""``tracker dlq``: list and show dead letters; retry, archive, auto-archive, purge and
import them (``dlq_actions``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from tracker.cli import dlq_actions
from tracker.cli.backend import Backend, Filters
from tracker.cli.dlq_selection import chosen, filter_options
from tracker.cli.operating import operate
from tracker.cli.output import emit_json, show_block, shown_of, table
from tracker.cli.output import show as show_value
from tracker.cli.params import ID, LIMIT, json_option
from tracker.cli.resolve import one
from tracker.cli.rows import ENTRY_COLUMNS, entry_row, record

if TYPE_CHECKING:
    from tracker.web.api.schemas import Execution, ExecutionDetail

SHOWN = (
    "executionId",
    "taskId",
    "queueName",
    "status",
    "retryCount",
    "maxRetries",
    "errorCategory",
    "errorType",
    "errorMessage",
    "groupId",
    "enqueuedAt",
    "processingStartedAt",
    "timeoutAt",
    "failedAt",
    "archivedAt",
    "archivedReason",
    "archivedBy",
    "sourceExecutionId",
    "nextExecutionId",
    "claimedBy",
)


@click.group()
def dlq() -> None:
    """Triage, retry and archive dead letters (executions in status dlq)."""


@dlq.command("list")
@filter_options
@click.option(
    "--limit", type=LIMIT, default=100, show_default=True, help="At most this many entries."
)
@json_option
@click.pass_context
def list_entries(
    ctx: click.Context,
    queue: str | None,
    category: str | None,
    older_than: float | None,
    group: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, newest first, with their task and failure group (`tracker groups
    list` lists the groups themselves)."""
    filters = Filters((), queue, category, older_than, group, limit)

    async def work(backend: Backend) -> tuple[list[Execution], int | None]:
        return await chosen(backend, filters)

    entries, total = operate(ctx, work)
    rows = [entry_row(entry) for entry in entries]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ENTRY_COLUMNS)
    shown_of(len(rows), total, err=as_json)


@dlq.command()
@click.argument("execution_id", metavar="ID", type=ID)
@json_option
@click.pass_context
def show(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """The full record of one execution: fields, history, payload and stack. ID: an
    execution id, a task id (its newest dead letter, else its newest execution), or the
    start of either."""

    async def work(backend: Backend) -> ExecutionDetail:
        match = await one(backend, execution_id, ("execution", "task"))
        if match.kind == "execution":
            return await backend.execution(match.id)
        chain = await backend.timeline(match.id)
        dead = [e for e in chain if e.status == "dlq"]
        return (dead or chain)[-1]

    data = record(operate(ctx, work))
    if as_json:
        emit_json(data)
        return
    for key in SHOWN:
        if data.get(key) is not None:
            click.echo(f"{key:>20}: {show_value(data[key])}")
    click.echo("\nhistory:")
    for entry in data["history"]:
        message = show_value(entry.get("message") or "")
        click.echo(f"  {entry['at']}  {show_value(entry['status']):<10} {message}")
    click.echo("\npayload:")
    click.echo(show_block(json.dumps(data.get("payload"), indent=2, ensure_ascii=False)))
    if data.get("metadata"):
        click.echo("\nmetadata:")
        click.echo(show_block(json.dumps(data["metadata"], indent=2, ensure_ascii=False)))
    if data.get("rawBody"):
        click.echo("\nraw body:")
        click.echo(show_block(data["rawBody"]))
    if data.get("errorStack"):
        click.echo("\nstack:")
        click.echo(show_block(data["errorStack"]))


for _command in (
    dlq_actions.retry,
    dlq_actions.archive_command,
    dlq_actions.auto_archive,
    dlq_actions.purge,
    dlq_actions.import_command,
):
    dlq.add_command(_command)
