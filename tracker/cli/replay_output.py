"""What the ``tracker replay`` commands print, and a job run (or followed) in the command's
process with its progress on stderr."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from tracker.cli.app import state
from tracker.cli.output import emit_json
from tracker.operations import replays
from tracker.operations.replay_jobs import ReplayItem, ReplayJob

# Where a job rests when nobody needs to act; a canary stop is a failure (exit 1).
RESTING = ("completed", "cancelled", "paused", "stopped")


def job_row(job: ReplayJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "dryRun": job.dry_run,
        "selection": job.selection.as_document(),
        "reason": job.reason,
        "matched": job.matched,
        "pending": job.pending,
        "republished": job.republished,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "skipped": job.skipped,
        "ratePerSecond": job.rate_per_second,
        "canarySize": job.canary_size,
        "canaryMaxFailureShare": job.canary_max_failure_share,
        "stoppedReason": job.stopped_reason,
        "createdBy": job.created_by,
        "createdAt": job.created_at,
        "finishedAt": job.finished_at,
    }


def progress_line(job: ReplayJob) -> str:
    if job.dry_run:
        return f"replay {job.id}: dry run, {job.matched} task(s) would run"
    done = job.matched - job.pending
    line = (
        f"replay {job.id}: {job.state}, {done}/{job.matched} done: {job.republished} "
        f"republished, {job.succeeded} succeeded, {job.failed} failed, {job.skipped} skipped"
    )
    return f"{line} ({job.stopped_reason})" if job.stopped_reason else line


def finish(job: ReplayJob, as_json: bool) -> None:
    """Print the job; a job its canary stopped is exit 1."""
    if as_json:
        emit_json(job_row(job))
    else:
        click.echo(progress_line(job))
    if job.state == "stopped":
        raise SystemExit(1)


async def run_here(ctx: click.Context, job_id: str, quiet: bool) -> ReplayJob:
    """Run the job in this process with the CLI's publisher, progress on stderr; when a
    service holds it, follow it instead until it rests."""
    from tracker.cli.publishing import cli_publisher

    def show(job: ReplayJob) -> None:
        if not quiet:
            click.echo(progress_line(job), err=True)

    async with cli_publisher(state(ctx).settings) as publish:
        done = await replays.ReplayRunner(publish, poll=0.5).run_job(job_id, on_progress=show)
    if done is not None:
        return done
    while (job := await replays.get_replay(job_id)).state not in RESTING:
        show(job)
        await asyncio.sleep(1.0)
    return job


def item_row(item: ReplayItem) -> dict[str, Any]:
    return {
        "position": item.position,
        "taskId": item.task_id,
        "executionId": item.execution_id,
        "outcome": item.outcome,
        "newExecutionId": item.new_execution_id,
        "detail": item.detail,
        "supersedes": list(item.supersedes),
    }
