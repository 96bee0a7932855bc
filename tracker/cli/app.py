"""The ``tracker`` command group, and the store connection every command shares. Output is
``output``'s, parameter types ``params``'."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from tracker.errors import ConfigurationError, StoreUnavailableError
from tracker.logging import configure_logging
from tracker.settings import Settings, parse_service_url
from tracker.validation import printable
from tracker.version import DISTRIBUTION, __version__

T = TypeVar("T")

NOT_CONFIGURED = (
    "say which tracker to operate: a running service, `tracker --service "
    "http://127.0.0.1:9464 ...` (or TRACKER_SERVICE_URL; the only way to reach one on the "
    "in-memory store), or the MongoDB your workers write to, "
    "TRACKER_MONGODB_URL=mongodb://host:27017/tracker"
)


@dataclass(frozen=True)
class ServiceTarget:
    """A running service to operate through its HTTP API: its base URL and the bearer token
    to send (None: none, for a service without ``TRACKER_API_TOKENS`` on this machine).
    ``transport``: makes the HTTP transport to use instead of the network (tests);
    ``read_timeout``: seconds to wait for an answer (None: the default bound)."""

    url: str
    token: str | None = None
    transport: Callable[[], Any] | None = None
    read_timeout: float | None = None


@dataclass
class CliState:
    settings: Settings
    # Tests and the single-process demo: the in-memory store of this process, by database.
    in_memory_database: str | None = None
    # The service the operator commands go through (None: MongoDB directly).
    service: ServiceTarget | None = None


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
            await connection.connect(
                current.settings.mongodb_url,
                current.settings.database,
                sharded=current.settings.sharded,
            )
        try:
            return await work()
        finally:
            await connection.disconnect()

    try:
        return asyncio.run(connected())
    except (StoreUnavailableError, ConfigurationError) as error:
        raise click.ClickException(str(error)) from error


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

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an error no command expected is one line and exit 1 (the
        traceback with ``--debug``), never a page of traceback."""
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            # A failure already told in one line: with --debug, also what caused it.
            if ctx.params.get("debug") and error.__cause__ is not None:
                import traceback

                cause = error.__cause__
                click.echo(
                    "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)),
                    err=True,
                )
            raise
        except (click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            message = printable(str(error).splitlines()[0] if str(error) else "", 300)
            name = type(error).__name__
            raise click.ClickException(f"{name}: {message}" if message else name) from error

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
    "groups": ("tracker.cli.groups:groups", "Failure groups: list, show, mute, resolve."),
    "replay": ("tracker.cli.replay:replay", "Replay dead letters as a job: start, status, pause."),
    "audit": ("tracker.cli.audit:audit", "The audit log: who did what, when, why."),
    "serve": ("tracker.cli.serve:serve", "Run tracked consumers as a service."),
    "console": ("tracker.cli.console:console", "Serve the operator console and API alone."),
    "migrate": ("tracker.cli.migrate:migrate", "Create the indexes; move between index sets."),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--service",
    metavar="URL",
    help="Operate the service at URL through its HTTP API (default: TRACKER_SERVICE_URL; "
    "its token: TRACKER_SERVICE_TOKEN) instead of MongoDB.",
)
@click.option("--debug", is_flag=True, help="On an unexpected error, show its traceback.")
@click.version_option(
    __version__,
    "--version",
    "-V",
    prog_name="tracker",
    message=f"%(prog)s %(version)s ({DISTRIBUTION})",
)
@click.pass_context
def main(ctx: click.Context, service: str | None, debug: bool) -> None:
    """Inspect tracked tasks and operate the dead-letter queue.

    The operator commands (status, stats, stuck, dlq, groups, replay, audit) work on a
    running service's HTTP API with --service URL or TRACKER_SERVICE_URL, else on the
    MongoDB named by TRACKER_MONGODB_URL (and TRACKER_DATABASE); commands that publish on
    MongoDB use TRACKER_AMQP_URL. Exit codes: 0 success, 1 failure, 2 bad usage.
    """
    if ctx.obj is None:
        try:
            ctx.obj = CliState(settings=Settings.from_env())
        except ConfigurationError as error:
            raise click.UsageError(str(error)) from error
    current = state(ctx)
    url = service or (None if current.service else current.settings.service_url)
    if url is not None:
        try:
            url = parse_service_url(url, "--service")
        except ConfigurationError as error:
            raise click.BadParameter(str(error), param_hint="--service") from None
        known = current.service
        current.service = ServiceTarget(
            url,
            current.settings.service_token if known is None else known.token,
            None if known is None else known.transport,
        )
    settings = current.settings
    # Output is the command's; logs go to stderr, quiet unless TRACKER_LOG_LEVEL asks.
    level = settings.log_level if os.environ.get("TRACKER_LOG_LEVEL") else "WARNING"
    configure_logging(settings.log_format, level)
