"""``tracker migrate --topology``: the broker queues of tracked queues brought to this
version, as a starting ``Worker`` does for its own (``tracker.rabbit.upgrade``)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from tracker.cli.output import emit_json
from tracker.cli.params import DURATION
from tracker.constants import DEFAULT_TIMEOUT_SECONDS
from tracker.errors import TopologyError
from tracker.retry import RetryPolicy
from tracker.settings import Settings
from tracker.validation import check_queue


def upgrade_topology(
    settings: Settings,
    topology: bool,
    queues: tuple[str, ...],
    tiers: str | None,
    timeout: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    import aiormq

    from tracker.rabbit.nodes import parse_urls, redact
    from tracker.rabbit.topology import topology_specs
    from tracker.rabbit.upgrade import declare_queues, plan_queues

    if not topology:
        raise click.UsageError("--queue, --tiers and --timeout go with --topology")
    if not queues:
        raise click.UsageError("--topology needs at least one --queue")
    for queue in queues:
        try:
            check_queue(queue)
        except (TypeError, ValueError) as error:
            raise click.BadParameter(str(error), param_hint="--queue") from None
    policy = _policy(tiers)
    timeout_ms = round((DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout) * 1000)
    specs = [
        spec
        for queue in queues
        for spec in topology_specs(
            queue, policy.tiers_ms, timeout_ms, group_size=settings.quorum_group_size
        )
    ]
    url = parse_urls(settings.amqp_url)[0]
    act = plan_queues if dry_run else declare_queues
    try:
        done = asyncio.run(act(url, specs))
    except TopologyError as error:
        raise click.ClickException(str(error)) from error
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as error:
        raise click.ClickException(
            f"cannot reach RabbitMQ at {redact(url)}: {type(error).__name__}: {error}"
        ) from error
    if as_json:
        emit_json({"dryRun": dry_run, "queues": done})
        return
    for name, step in done.items():
        click.echo(f"{name}: {step}")


def _policy(tiers: str | None) -> RetryPolicy:
    if tiers is None:
        return RetryPolicy()
    delays: list[Any] = [DURATION.convert(part, None, None) for part in tiers.split(",")]
    try:
        return RetryPolicy(tiers=tuple(delays))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tiers") from None
