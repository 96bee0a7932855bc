"""What commands print, and how: every value from the database is shown escaped (a stored
escape sequence must not rewrite the operator's terminal), JSON is always valid JSON, bulk
work shows progress on stderr, and changing data asks first."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from tracker.clock import iso_utc
from tracker.constants import MAX_COUNTED
from tracker.validation import printable

T = TypeVar("T")


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout. Text that is not valid Unicode (lone surrogates) comes out
    as JSON escapes, so the output is valid JSON whatever the database holds."""
    text = json.dumps(data, indent=2, default=_json_default, ensure_ascii=False)
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def show(value: Any, limit: int = 10_000) -> str:
    """A value as one line of safe terminal text."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return printable(str(value), limit)


def show_block(text: str) -> str:
    """Several lines of text from the database (a stack, a payload): each line escaped."""
    return "\n".join(printable(line, 10_000) for line in text.splitlines())


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], width: int = 60
) -> None:
    """A plain aligned table; cells longer than ``width`` are cut with an ellipsis."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[show(row.get(key), width) for key, _ in columns] for row in rows]
    headers = [title for _, title in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def shown_of(count: int, total: int | None, *, err: bool = False) -> None:
    """Say how much of a longer list is shown ("50 of 412 shown"); nothing when it is all.
    A total over ``MAX_COUNTED`` is not counted on ("more than 10,000")."""
    if total is None or total <= count:
        return
    of = f"more than {MAX_COUNTED:,}" if total > MAX_COUNTED else f"{total:,}"
    click.echo(f"{count:,} of {of} shown", err=err)


def confirm(yes: bool, question: str) -> None:
    """Ask before changing data, unless ``--yes``; without a terminal to ask, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm without a prompt.")
    click.confirm(question, abort=True)


def progress(items: Iterable[T], length: int, label: str, quiet: bool) -> Any:
    """A progress bar on stderr for bulk work (none with ``--json``)."""
    if quiet:
        return _Silent(items)
    return click.progressbar(items, length=length, label=label, file=sys.stderr)


class _Silent:
    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __enter__(self) -> Iterable[Any]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None
