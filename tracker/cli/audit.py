"""``tracker audit``: the audit log, newest first: who did what to which records, when,
why, with what result."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from tracker.cli.acting import MOMENT
from tracker.cli.backend import AuditFilters
from tracker.cli.operating import operate
from tracker.cli.output import emit_json, shown_of, table
from tracker.cli.rows import AUDIT_COLUMNS, audit_row
from tracker.operations.audit import ACTIONS
from tracker.operations.pages import MAX_LIMIT


@click.command()
@click.option("--actor", help="Only what this person or process did.")
@click.option("--action", type=click.Choice(sorted(ACTIONS)), help="Only this action.")
@click.option("--target", help="Only actions on this (e.g. group:ID, replay:ID).")
@click.option("--since", type=MOMENT, help="Since (2h, 7d, or an ISO time).")
@click.option("--until", type=MOMENT, help="Until (2h, 7d, or an ISO time).")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after the page that printed it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def audit(
    ctx: click.Context,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """The audit log, newest first: every operator action of the CLI, the API and the
    console, with its actor, reason and result."""
    filters = AuditFilters(actor, action, target, since, until)
    page = operate(ctx, lambda backend: backend.audit(filters, cursor=cursor, limit=limit))
    rows = [audit_row(entry) for entry in page.items]
    if as_json:
        emit_json({"items": rows, "nextCursor": page.next_cursor, "total": page.total})
        return
    shown = [{**row, "result": _compact(row["result"])} for row in rows]
    table(shown, AUDIT_COLUMNS)
    if page.next_cursor:
        shown_of(len(rows), page.total)
        click.echo(f"more: --cursor {page.next_cursor}")


def _compact(result: dict[str, Any] | None) -> str | None:
    if result is None:
        return None
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str)
