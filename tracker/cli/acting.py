"""What the commands built on the operations layer share: who acts, and the errors an
operation raises turned into one line and exit code 1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from tracker.cli.app import run
from tracker.cli.params import DURATION
from tracker.clock import as_utc, utcnow
from tracker.errors import ConflictError, NotFoundError
from tracker.operations.actors import Actor, cli_actor
from tracker.validation import printable

T = TypeVar("T")

by_option = click.option(
    "--by", "by", help="Who acts, as the audit log names them (default: TRACKER_ACTOR, else you)."
)


def actor(by: str | None = None) -> Actor:
    """The operator at this terminal (``--by``, TRACKER_ACTOR, the OS user)."""
    try:
        return cli_actor(by)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--by") from None


def act(ctx: click.Context, work: Callable[[], Awaitable[T]]) -> T:
    """``run`` an operation: no such thing, a conflicting state or a refused value is one
    line and exit 1."""
    try:
        return run(ctx, work)
    except (NotFoundError, ConflictError, PermissionError, ValueError) as error:
        raise click.ClickException(printable(str(error), 300)) from error


class Moment(click.ParamType):  # type: ignore[type-arg]
    """A time: how long ago (``90m``, ``2h``, ``7d``) or an ISO date and time (UTC unless
    it says otherwise)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return as_utc(value)
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                ago = DURATION.convert(value, param, ctx)
            except click.BadParameter:
                self.fail(
                    f"{text[:40]!r} is not a time: give how long ago (90m, 2h, 7d) or an ISO "
                    "date and time (2026-11-29T10:00:00)"
                )
            return utcnow() - timedelta(seconds=ago)
        return as_utc(parsed)


MOMENT = Moment()
