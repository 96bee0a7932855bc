"""The command line's parameter types and shared options, each with its bounds stated in
its error: durations, ids, limits."""

from __future__ import annotations

import re
from typing import Any

import click

from tracker.clock import MAX_DURATION_SECONDS
from tracker.validation import id_problem

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,6})?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
MAX_LIMIT = 10_000


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds) -> seconds, at
    most a hundred years."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            amount = float(value)
        else:
            match = _DURATION.match(str(value))
            if match is None:
                self.fail(f"{str(value)[:40]!r} is not a duration: use e.g. 90s, 30m, 12h or 7d")
            amount = float(match[1]) * _UNITS[match[2]]
        if not 0 <= amount <= MAX_DURATION_SECONDS:
            self.fail(f"{str(value)[:40]!r} is out of range: at most 100 years (36500d)")
        return amount


class Id(click.ParamType):  # type: ignore[type-arg]
    """A task id, execution id or queue name: 1 to 512 characters, no control characters."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = id_problem(value, "the value")
        if problem is not None:
            self.fail(problem)
        return str(value)


DURATION = Duration()
ID = Id()
LIMIT = click.IntRange(1, MAX_LIMIT)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would change, change nothing."
)
