"""`tracker replay` and `tracker audit`, on MongoDB and through a service: a dry run, a job
created for the service, one run (in the command's process on MongoDB, by the service
through it) on the real broker with its progress, steering a job, and hostile input as one
line with a real exit code."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aio_pika
import pytest
from click.testing import CliRunner, Result

from tests.conftest import AMQP_URL
from tests.dead_letters import dead_letter
from tests.service_harness import cli_state, on_store
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.models import TaskTracker
from tracker.rabbit.topology import declare_topology, topology_queue_names
from tracker.retry import RetryPolicy
from tracker.settings import Settings

T = TypeVar("T")


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state, env={"TRACKER_ACTOR": "ana"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def query(state: CliState, work: Callable[[], Awaitable[T]]) -> T:
    return on_store(state.in_memory_database or "", work)


@pytest.fixture
def seeded(cli_backend: str) -> tuple[CliState, str]:
    """Three dead letters of three tasks on a queue of their own."""
    queue = f"cli-replay-{uuid.uuid4().hex[:8]}"
    state = cli_state(f"tracker_cli_replay_{queue[-8:]}", cli_backend, Settings(amqp_url=AMQP_URL))

    async def seed() -> None:
        for n in range(3):
            await dead_letter(f"{queue}:{n}", queue)

    query(state, seed)
    return state, queue


def test_a_dry_run_counts_and_is_audited(seeded: tuple[CliState, str]) -> None:
    state, queue = seeded
    job = as_json(cli(state, "replay", "start", "-q", queue, "-r", "look", "--dry-run", "--json"))
    assert (job["state"], job["matched"], job["dryRun"]) == ("completed", 3, True)
    human = cli(state, "replay", "start", "-q", queue, "-r", "look", "--dry-run")
    assert human.stdout.endswith(": dry run, 3 task(s) would run\n")
    audited = as_json(cli(state, "audit", "--action", "replay.dry_run", "--json"))["items"]
    assert [(e["actor"], e["reason"]) for e in audited] == [("ana", "look"), ("ana", "look")]


def test_a_job_for_the_service_is_watched_and_steered(seeded: tuple[CliState, str]) -> None:
    # Given: a job created without --run (a service runs it)
    state, queue = seeded
    created = cli(state, "replay", "start", "-q", queue, "-r", "fixed", "--canary", "1", "--yes")
    assert created.exit_code == 0, created.output
    job_id = created.stdout.split()[1]
    # When / Then (a job is named by the start of its id too)
    status = as_json(cli(state, "replay", "status", job_id[:8], "--items", "--json"))
    assert (status["state"], status["matched"], status["canarySize"]) == ("pending", 3, 1)
    assert [i["outcome"] for i in status["items"]] == ["pending"] * 3
    listed = as_json(cli(state, "replay", "list", "--state", "pending", "--json"))["items"]
    assert [j["id"] for j in listed] == [job_id]
    assert cli(state, "replay", "pause", job_id).stdout.startswith(f"replay {job_id}: paused")
    again = cli(state, "replay", "pause", job_id)
    assert (again.exit_code, again.output.strip()) == (
        1,
        f"Error: replay {job_id} is paused: it cannot be paused",
    )
    cancelled = as_json(cli(state, "replay", "cancel", job_id, "-r", "wrong group", "--json"))
    assert (cancelled["state"], cancelled["skipped"]) == ("cancelled", 3)
    audited = as_json(cli(state, "audit", "--target", f"replay:{job_id}", "--json"))["items"]
    assert sorted(e["action"] for e in audited) == [
        "replay.cancel",
        "replay.pause",
        "replay.pause",
        "replay.start",
    ]


def test_an_unconfirmed_start_changes_nothing(seeded: tuple[CliState, str]) -> None:
    state, queue = seeded
    refused = cli(state, "replay", "start", "-q", queue, "-r", "x")
    assert refused.exit_code == 2
    assert "--yes" in refused.output
    assert as_json(cli(state, "replay", "list", "--json"))["items"] == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["replay", "start", "-q", "q"], 2),  # --reason is required
        (["replay", "start", "-r", "x", "--yes"], 2),  # nothing selected
        (["replay", "start", "-q", "q", "-r", "x", "--canary-max-failures", "0.5"], 2),
        (["replay", "start", "-q", "q", "-r", "x", "--rate", "0"], 2),
        (["replay", "start", "-q", "q", "-r", "x", "--since", "last tuesday"], 2),
        (["replay", "start", "-q", "q", "-r", "x", "--status", "completed"], 2),
        (["replay", "start", "-q", "\x1b[2J", "-r", "x"], 2),
        (["replay", "start", "-q", "nothing-here", "-r", "x", "--yes"], 1),
        (["replay", "status", "no-such-job"], 1),
        (["replay", "status", "x", "--outcome", "lost"], 2),
        (["replay", "list", "--cursor", "garbage"], 1),
        (["replay", "resume", "no-such-job"], 1),
        (["audit", "--action", "drop"], 2),
        (["audit", "--since", "\x00"], 2),
    ],
)
def test_bad_input_is_one_line_and_a_real_exit_code(
    seeded: tuple[CliState, str], args: list[str], code: int
) -> None:
    state, _ = seeded
    result = cli(state, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output


@pytest.fixture
def declared(amqp_url: str, seeded: tuple[CliState, str]) -> Iterator[str]:
    """The seeded queue's topology on the real broker, deleted afterwards."""
    queue = seeded[1]

    async def setup(delete: bool) -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            if delete:
                for name in topology_queue_names(queue, RetryPolicy().tiers_ms):
                    await channel.queue_delete(name)
            else:
                await declare_topology(channel, queue, RetryPolicy().tiers_ms)

    asyncio.run(setup(False))
    yield queue
    asyncio.run(setup(True))


@pytest.mark.rabbitmq
def test_run_in_the_command_republishes_at_the_rate_and_reports_progress(
    seeded: tuple[CliState, str], declared: str
) -> None:
    # Given
    state, queue = seeded
    # When
    args = ["replay", "start", "-q", queue, "-r", "fixed", "--rate", "50", "--follow", "0s"]
    result = CliRunner().invoke(main, [*args, "--run", "--yes"], obj=state)
    # Then
    assert result.exit_code == 0, result.output
    assert "3/3 done: 3 republished" in result.stdout
    assert "/3 done:" in result.stderr  # its progress, as it went

    async def queued() -> list[TaskTracker]:
        return await TaskTracker.find({"queueName": queue, "status": "queued"}).to_list()

    assert len(query(state, queued)) == 3
