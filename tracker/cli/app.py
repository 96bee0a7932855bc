"""The ``tracker`` command group and what every command shares: the store connection,
durations, JSON or table output, confirmation."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import click

from tracker.errors import ConfigurationError, StoreUnavailableError
from tracker.logging import configure_logging
from tracker.settings import Settings

T = TypeVar("T")

NOT_CONFIGURED = (
    "TRACKER_MONGODB_URL is not set. The tracker command reads the MongoDB your workers "
    "write to: set TRACKER_MONGODB_URL=mongodb://host:27017/tracker. (The in-memory store "
    "lives inside one process and cannot be shared with this command; to see the tracker "
    "work without a MongoDB server, run `make demo`.)"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


@dataclass
class CliState:
    settings: Settings
    # Tests and the single-process demo: the in-memory store of this process, by database.
    in_memory_database: str | None = None


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds) -> seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration: use e.g. 90s, 30m, 12h or 7d", param, ctx)
        return float(match[1]) * _UNITS[match[2]]


DURATION = Duration()


def state(ctx: click.Context) -> CliState:
    return ctx.ensure_object(CliState)


def run(ctx: click.Context, work: Callable[[], Awaitable[T]]) -> T:
    """Connect the store, run ``work`` in an event loop, and turn store errors into exit 1."""
    from tracker.store import connection

    current = state(ctx)

    async def connected() -> T:
        if current.in_memory_database is not None:
            await connection.connect(None, current.in_memory_database)
        elif current.settings.in_memory:
            raise click.UsageError(NOT_CONFIGURED)
        else:
            await connection.connect(current.settings.mongodb_url, current.settings.database)
        try:
            return await work()
        finally:
            await connection.disconnect()

    try:
        return asyncio.run(connected())
    except (StoreUnavailableError, ConfigurationError) as error:
        raise click.ClickException(str(error)) from error


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], width: int = 60
) -> None:
    """A plain aligned table; cells longer than ``width`` are cut with an ellipsis."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(key), width) for key, _ in columns] for row in rows]
    headers = [title for _, title in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any, width: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


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


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would change, change nothing."
)


class LazyGroup(click.Group):
    """A group whose subcommands are imported when one is run, so ``tracker --help`` and
    every command load only what they use. ``lazy`` maps a name to ("module:attribute",
    short help)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, _, attribute = self.lazy[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, self.lazy[name][1] if name in self.lazy else self.commands[name].short_help)
            for name in self.list_commands(ctx)
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl([(name, text or "") for name, text in rows])


COMMANDS = {
    "status": ("tracker.cli.tasks:status", "Show the retry chain of a task: every attempt."),
    "stats": ("tracker.cli.tasks:stats", "Executions per status per queue."),
    "stuck": ("tracker.cli.tasks:stuck", "List executions stuck in processing; --fail them."),
    "dlq": ("tracker.cli.dlq:dlq", "Triage, retry and archive dead letters."),
    "serve": ("tracker.cli.serve:serve", "Run tracked consumers as a service."),
    "migrate": ("tracker.cli.migrate:migrate", "Create the indexes; move between index sets."),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Inspect tracked tasks and operate the dead-letter queue.

    Reads the MongoDB named by TRACKER_MONGODB_URL (and TRACKER_DATABASE); commands that
    publish use TRACKER_AMQP_URL. Exit codes: 0 success, 1 failure, 2 bad usage.
    """
    if ctx.obj is None:
        try:
            ctx.obj = CliState(settings=Settings.from_env())
        except ConfigurationError as error:
            raise click.UsageError(str(error)) from error
    settings = state(ctx).settings
    # Output is the command's; logs go to stderr, quiet unless TRACKER_LOG_LEVEL asks.
    level = settings.log_level if os.environ.get("TRACKER_LOG_LEVEL") else "WARNING"
    configure_logging(settings.log_format, level)
