"""``tracker dlq``: list and show dead letters; retry, archive, auto-archive, purge and
import them (``dlq_actions``)."""

from __future__ import annotations

import json

import click

from tracker.cli import dlq_actions
from tracker.cli.app import run
from tracker.cli.dlq_selection import (
    ENTRY_COLUMNS,
    entry_row,
    filters_without_group,
    selected,
)
from tracker.cli.groups import print_groups
from tracker.cli.output import emit_json, show_block, table
from tracker.cli.output import show as show_value
from tracker.cli.params import ID, LIMIT, json_option
from tracker.models import TaskTracker
from tracker.operations import groups, pages
from tracker.operations.dead_letters import Selection


@click.group()
def dlq() -> None:
    """Triage, retry and archive dead letters (executions in status dlq)."""


@dlq.command("list")
@filters_without_group
@click.option(
    "--group", "-g", "grouped", is_flag=True, help="List the failure groups (of --queue) instead."
)
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
    grouped: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, newest first; --group lists their failure groups instead (one per
    cause: `tracker groups`), most recently seen first."""
    if grouped:
        if category is not None or older_than is not None:
            raise click.UsageError("--group lists groups by --queue only (see `tracker groups`)")
        page = run(ctx, lambda: groups.list_groups(queue=queue, limit=min(limit, pages.MAX_LIMIT)))
        print_groups(page.items, page.next_cursor, as_json)
        return
    selection = Selection((), queue, category, older_than, limit=limit)
    entries = run(ctx, lambda: selected(selection))
    rows = [entry_row(doc) for doc in entries]
    if as_json:
        emit_json(rows)
        return
    table(rows, ENTRY_COLUMNS)


@dlq.command()
@click.argument("execution_id", type=ID)
@json_option
@click.pass_context
def show(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """The full record of one execution: fields, history, payload and stack."""
    doc = run(ctx, lambda: TaskTracker.find_execution(execution_id))
    if doc is None:
        raise click.ClickException(f"no execution {show_value(execution_id)!r}")
    record = doc.model_dump(by_alias=True, exclude={"id", "revision_id", "raw_body"}, mode="json")
    if doc.raw_body is not None:
        record["rawBody"] = doc.raw_body.decode("utf-8", "backslashreplace")
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
        "groupId",
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
            click.echo(f"{key:>20}: {show_value(record[key])}")
    click.echo("\nhistory:")
    for entry in record["history"]:
        message = show_value(entry.get("message") or "")
        click.echo(f"  {entry['at']}  {show_value(entry['status']):<10} {message}")
    click.echo("\npayload:")
    click.echo(show_block(json.dumps(record.get("payload"), indent=2, ensure_ascii=False)))
    if record.get("metadata"):
        click.echo("\nmetadata:")
        click.echo(show_block(json.dumps(record["metadata"], indent=2, ensure_ascii=False)))
    if record.get("rawBody"):
        click.echo("\nraw body:")
        click.echo(show_block(record["rawBody"]))
    if record.get("errorStack"):
        click.echo("\nstack:")
        click.echo(show_block(record["errorStack"]))


for _command in (
    dlq_actions.retry,
    dlq_actions.archive_command,
    dlq_actions.auto_archive,
    dlq_actions.purge,
    dlq_actions.import_command,
):
    dlq.add_command(_command)
