"""What the replay commands print: a job's progress line, its end, and its progress on
stderr while it runs or is followed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tracker.cli.output import emit_json
from tracker.cli.rows import job_row

if TYPE_CHECKING:
    from tracker.cli.backend import OnProgress
    from tracker.web.api.schemas import Replay


def progress_line(job: Replay) -> str:
    if job.dry_run:
        return f"replay {job.id}: dry run, {job.matched} task(s) would run"
    done = job.matched - job.pending
    line = (
        f"replay {job.id}: {job.state}, {done}/{job.matched} done: {job.republished} "
        f"republished, {job.succeeded} succeeded, {job.failed} failed, {job.skipped} skipped"
    )
    return f"{line} ({job.stopped_reason})" if job.stopped_reason else line


def finish(job: Replay, as_json: bool) -> None:
    """Print the job; a job its canary stopped is exit 1."""
    if as_json:
        emit_json(job_row(job))
    else:
        click.echo(progress_line(job))
    if job.state == "stopped":
        raise SystemExit(1)


def progress_printer(quiet: bool) -> OnProgress:
    """Each progress of a job as a line on stderr (nothing when ``quiet``)."""

    def show(job: Replay) -> None:
        if not quiet:
            click.echo(progress_line(job), err=True)

    return show
