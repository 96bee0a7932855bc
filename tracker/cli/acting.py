"""What the commands that act share: who acts (``--by``), and times given as an age or a
date (``--since``, ``--until``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from tracker.cli.params import DURATION
from tracker.clock import as_utc, utcnow

by_option = click.option(
    "--by",
    "by",
    help="Who acts, as the audit log names them (default: TRACKER_ACTOR, else you; through a "
    "service: your token's name).",
)


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
