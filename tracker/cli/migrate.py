"""``tracker migrate``: bring the collection's indexes to the set the deployment uses."""

from __future__ import annotations

import click

from tracker.cli.app import state
from tracker.cli.output import emit_json
from tracker.cli.params import DURATION, dry_run_option, json_option
from tracker.constants import DEFAULT_TIMEOUT_SECONDS
from tracker.retry import DEFAULT_TIERS


@click.command()
@click.option(
    "--sharded/--unsharded",
    default=None,
    help="The index set: for a collection sharded on {taskId: 1}, or not (default: "
    "TRACKER_SHARDED, else unsharded).",
)
@click.option(
    "--topology",
    is_flag=True,
    help="Instead of the indexes: bring the broker queues of each --queue to this version "
    "(docs/deploy.md, 'Upgrading the queues'); delay and deadline queues are rebuilt with "
    "their messages.",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    help="With --topology: a tracked queue (repeat for several).",
)
@click.option(
    "--tiers",
    default=None,
    metavar="DELAYS",
    help="With --topology: the queue's retry delay tiers, comma-separated durations "
    f"(default: RetryPolicy's, {','.join(f'{t:g}s' for t in DEFAULT_TIERS)}).",
)
@click.option(
    "--timeout",
    type=DURATION,
    default=None,
    help="With --topology: the consumers' timeout, which names the deadline queue "
    f"(default: @tracked's, {DEFAULT_TIMEOUT_SECONDS:g}s).",
)
@dry_run_option
@json_option
@click.pass_context
def migrate(
    ctx: click.Context,
    sharded: bool | None,
    topology: bool,
    queues: tuple[str, ...],
    tiers: str | None,
    timeout: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Create the indexes the tracker's guarantees rest on, and move between the unsharded
        and the sharded index set (docs/deploy.md); create the indexes of the audit log, failure
        groups and replays, and of the metadata keys in TRACKER_SEARCH_KEYS; give dead letters
    recorded before failure groups existed their group. Safe to run again:
        it changes only what differs. Unique indexes are created before anything is dropped."""
    import asyncio

    from tracker.errors import ConfigurationError, StoreUnavailableError
    from tracker.operations import group_upkeep
    from tracker.store import connection, indexes, operator_records

    settings = state(ctx).settings
    if topology or queues or tiers is not None or timeout is not None:
        from tracker.cli.topology import upgrade_topology

        upgrade_topology(settings, topology, queues, tiers, timeout, dry_run, as_json)
        return
    sharded = settings.sharded if sharded is None else sharded
    if settings.in_memory and state(ctx).in_memory_database is None:
        raise click.UsageError(
            "TRACKER_MONGODB_URL is not set: the in-memory store creates its indexes itself"
        )

    async def work(sharded: bool) -> indexes.IndexPlan:
        url = None if state(ctx).in_memory_database else settings.mongodb_url
        database = state(ctx).in_memory_database or settings.database
        await connection.connect(url, database, sharded=sharded)
        try:
            existing = await connection.collection().index_information()
            steps = indexes.plan(existing, sharded)
            if not dry_run:
                await indexes.apply(connection.collection(), steps, sharded)
                steps.create += await operator_records.ensure(
                    connection.database(),
                    connection.collection(),
                    search_keys=settings.search_keys,
                    audit_retention=settings.audit_retention,
                    in_memory=connection.is_in_memory(),
                )
                # Dead letters recorded before failure groups existed get theirs.
                while await group_upkeep.backfill() == group_upkeep.BACKFILL_BATCH:
                    pass
            return steps
        finally:
            await connection.disconnect()

    try:
        steps = asyncio.run(work(sharded))
    except (StoreUnavailableError, ConfigurationError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        emit_json({"dryRun": dry_run, "create": steps.create, "drop": steps.drop})
        return
    verb = ("would create", "would drop") if dry_run else ("created", "dropped")
    click.echo(f"{verb[0]}: {', '.join(steps.create) or 'nothing'}")
    click.echo(f"{verb[1]}: {', '.join(steps.drop) or 'nothing'}")
