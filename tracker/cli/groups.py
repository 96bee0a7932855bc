"""``tracker groups``: failure groups (one per cause of dead letters) and their lifecycle:
list, show, mute, unmute, resolve."""

from __future__ import annotations

from typing import Any

import click

from tracker.cli.acting import act, actor, by_option
from tracker.cli.output import emit_json, table
from tracker.cli.output import show as show_value
from tracker.cli.params import ID, json_option
from tracker.operations import groups as operations
from tracker.operations.groups import FailureGroup
from tracker.operations.pages import MAX_LIMIT

GROUP_COLUMNS = [
    ("id", "GROUP"),
    ("state", "STATE"),
    ("muted", "MUTED"),
    ("count", "COUNT"),
    ("queue", "QUEUE"),
    ("category", "CATEGORY"),
    ("errorType", "TYPE"),
    ("lastSeen", "LAST SEEN"),
    ("signature", "MESSAGE"),
]
reason_option = click.option("--reason", "-r", help="Why (written to the audit log).")


def group_row(group: FailureGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "state": group.state,
        "muted": group.muted,
        "count": group.count,
        "queue": group.queue,
        "category": group.category,
        "errorType": group.error_type,
        "signature": group.signature,
        "sampleMessage": group.sample_message,
        "sampleExecutionId": group.sample_execution_id,
        "firstSeen": group.first_seen,
        "lastSeen": group.last_seen,
        "resolvedAt": group.resolved_at,
        "resolvedBy": group.resolved_by,
    }


def print_groups(found: list[FailureGroup], next_cursor: str | None, as_json: bool) -> None:
    rows = [group_row(g) for g in found]
    if as_json:
        emit_json({"items": rows, "nextCursor": next_cursor})
        return
    table(rows, GROUP_COLUMNS)
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}")


@click.group()
def groups() -> None:
    """Failure groups: dead letters grouped by cause (queue, category, error type, message
    signature), open -> resolved -> regressed, and muted or not. The group id is the one
    `tracker dlq ... --group` and `tracker replay start --group` take."""


@groups.command("list")
@click.option("--queue", "-q", type=ID, help="Only this queue's groups.")
@click.option("--state", type=click.Choice(operations.STATES), help="Only groups in this state.")
@click.option("--muted/--unmuted", default=None, help="Only muted, or only unmuted, groups.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after the page that printed it.")
@json_option
@click.pass_context
def list_groups(
    ctx: click.Context,
    queue: str | None,
    state: operations.GroupState | None,
    muted: bool | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Failure groups, most recently seen first."""
    page = act(
        ctx,
        lambda: operations.list_groups(
            queue=queue, state=state, muted=muted, cursor=cursor, limit=limit
        ),
    )
    print_groups(page.items, page.next_cursor, as_json)


@groups.command()
@click.argument("group_id", type=ID)
@json_option
@click.pass_context
def show(ctx: click.Context, group_id: str, as_json: bool) -> None:
    """One group, with how many of its dead letters are left."""

    async def work() -> dict[str, Any]:
        group = await operations.get_group(group_id)
        return {**group_row(group), "deadLettersLeft": await operations.dead_letters_left(group_id)}

    record = act(ctx, work)
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        click.echo(f"{key:>18}: {show_value(value)}")


def _action(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("group_id", type=ID)
    @reason_option
    @by_option
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context, group_id: str, reason: str | None, by: str | None, as_json: bool
    ) -> None:
        who = actor(by)
        operation = getattr(operations, name)
        group = act(ctx, lambda: operation(group_id, who, reason))
        if as_json:
            emit_json(group_row(group))
        else:
            muted = " (muted)" if group.muted else ""
            click.echo(f"group {group.id}: {group.state}{muted}, {group.count} dead letters")

    return command


for _name, _help in (
    ("mute", "Mute a group: still counted, never alerting. Audited."),
    ("unmute", "Let a muted group alert again. Audited."),
    ("resolve", "Mark a group resolved; its next dead letter regresses it. Audited."),
):
    groups.add_command(_action(_name, _help))
