"""``tracker audit``: the audit log, newest first: who did what to which records, when,
why, with what result."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from tracker.cli.acting import MOMENT, act
from tracker.cli.output import emit_json, table
from tracker.operations import audit as operations
from tracker.operations.audit import ACTIONS, AuditEntry
from tracker.operations.pages import MAX_LIMIT

COLUMNS = [
    ("at", "AT"),
    ("actor", "ACTOR"),
    ("via", "VIA"),
    ("action", "ACTION"),
    ("target", "TARGET"),
    ("reason", "REASON"),
    ("result", "RESULT"),
]


def entry_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "role": entry.role,
        "via": entry.via,
        "action": entry.action,
        "target": entry.target,
        "selection": entry.selection,
        "reason": entry.reason,
        "result": entry.result,
    }


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
    page = act(
        ctx,
        lambda: operations.entries(
            actor=actor,
            action=action,
            target=target,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        ),
    )
    rows = [entry_row(entry) for entry in page.items]
    if as_json:
        emit_json({"items": rows, "nextCursor": page.next_cursor})
        return
    shown = [{**row, "result": _compact(row["result"])} for row in rows]
    table(shown, COLUMNS)
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def _compact(result: dict[str, Any] | None) -> str | None:
    if result is None:
        return None
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str)
