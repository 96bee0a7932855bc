"""``tracker groups``: failure groups (one per cause of dead letters) and their lifecycle:
list, show, mute, unmute, resolve. A group is named by its id or the start of it."""

from __future__ import annotations

import click

from tracker.cli.acting import by_option
from tracker.cli.backend import Backend
from tracker.cli.operating import operate
from tracker.cli.output import emit_json, shown_of, table
from tracker.cli.output import show as show_value
from tracker.cli.params import ID, json_option
from tracker.cli.resolve import one
from tracker.cli.rows import GROUP_COLUMNS, group_row
from tracker.errors import NotFoundError
from tracker.operations.groups import STATES
from tracker.operations.pages import MAX_LIMIT
from tracker.web.api.schemas import Group, ListOf

reason_option = click.option("--reason", "-r", help="Why (written to the audit log).")


@click.group()
def groups() -> None:
    """Failure groups: dead letters grouped by cause (queue, category, error type, message
    signature), open -> resolved -> regressed, and muted or not. The group id is the one
    `tracker dlq ... --group` and `tracker replay start --group` take."""


@groups.command("list")
@click.option("--queue", "-q", type=ID, help="Only this queue's groups.")
@click.option("--state", type=click.Choice(STATES), help="Only groups in this state.")
@click.option("--muted/--unmuted", default=None, help="Only muted, or only unmuted, groups.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after the page that printed it.")
@json_option
@click.pass_context
def list_groups(
    ctx: click.Context,
    queue: str | None,
    state: str | None,
    muted: bool | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Failure groups, most recently seen first."""

    async def work(backend: Backend) -> ListOf[Group]:
        page = await backend.groups(
            queue=queue, state=state, muted=muted, cursor=cursor, limit=limit
        )
        if not page.items and queue and not await backend.queues([queue]):
            raise NotFoundError(f"no executions in queue {queue!r}")
        return page

    page = operate(ctx, work)
    rows = [group_row(g) for g in page.items]
    if as_json:
        emit_json({"items": rows, "nextCursor": page.next_cursor, "total": page.total})
        return
    table(rows, GROUP_COLUMNS)
    if page.next_cursor:
        shown_of(len(rows), page.total)
        click.echo(f"more: --cursor {page.next_cursor}")


@groups.command()
@click.argument("group_id", metavar="ID", type=ID)
@json_option
@click.pass_context
def show(ctx: click.Context, group_id: str, as_json: bool) -> None:
    """One group, with how many of its dead letters are left."""

    async def work(backend: Backend) -> Group:
        return await backend.group((await one(backend, group_id, ("group",))).id)

    record = group_row(operate(ctx, work))
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        click.echo(f"{key:>18}: {show_value(value)}")


def _action(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("group_id", metavar="ID", type=ID)
    @reason_option
    @by_option
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context, group_id: str, reason: str | None, by: str | None, as_json: bool
    ) -> None:
        async def work(backend: Backend) -> Group:
            actor = await backend.actor(by)
            found = await one(backend, group_id, ("group",))
            return await backend.group_action(name, found.id, actor, reason)

        group = operate(ctx, work)
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
