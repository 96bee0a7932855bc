"""Running a command's work on the backend the settings choose: a service when one is named
(``--service``, ``TRACKER_SERVICE_URL``), else MongoDB. The backends, and what they load,
are imported only when a command runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from tracker.cli.app import state
from tracker.cli.backend import Backend
from tracker.validation import printable

T = TypeVar("T")


def operate(ctx: click.Context, work: Callable[[Backend], Awaitable[T]]) -> T:
    """Run ``work`` on the backend the settings choose: the service when one is named, else
    MongoDB. What the operator can correct is one line and exit 1."""
    from tracker.errors import ConflictError, NotFoundError

    current = state(ctx)
    try:
        if current.service is not None:
            from tracker.cli.remote import RemoteBackend

            target = current.service
            return asyncio.run(RemoteBackend.using(target, work))
        from tracker.cli.app import run
        from tracker.cli.direct import DirectBackend

        return run(ctx, lambda: work(DirectBackend(current.settings)))
    except (NotFoundError, ConflictError, PermissionError, ValueError) as error:
        raise click.ClickException(printable(str(error), 300)) from error
