"""The command line meets hostile input: any text given to its parsers, values in the
database that would rewrite a terminal, bounds that say what they are, on MongoDB and
through a service. Errors are one line with exit code 2 (usage) or 1 (failure), never a
traceback."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracker
from tests.service_harness import cli_state
from tracker import TaskStatus, claim, create_execution, transition
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.cli.params import DURATION, ID, LIMIT
from tracker.settings import Settings
from tracker.store import connection

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202e"
EVIL_TASK = f"evil{HOSTILE[:8]}"
COMMANDS = [
    ["status", "{x}"],
    ["dlq", "show", "{x}"],
    ["dlq", "list", "--queue", "{x}"],
    ["dlq", "list", "--group", "{x}"],
    ["dlq", "list", "--limit", "{x}"],
    ["dlq", "list", "--older-than", "{x}"],
    ["dlq", "archive", "{x}", "--reason", "r", "--dry-run"],
    ["stuck", "--older-than", "{x}"],
    ["stuck", "--limit", "{x}"],
    ["stats", "--queue", "{x}"],
    ["groups", "show", "{x}"],
    ["replay", "status", "{x}"],
    ["audit", "--target", "{x}"],
]


async def _seed(database: str) -> str:
    """A dead letter whose every text holds escape sequences: the tracker refuses such ids
    itself, so it is written as another writer of the collection could have written it."""
    await tracker.connect(None, database)
    try:
        created = await create_execution("plain-task", "hostile-q", {"note": HOSTILE})
        execution_id = created.execution.execution_id
        won = await claim(execution_id, worker="w", lease=60)
        await transition(
            execution_id,
            TaskStatus.DLQ,
            claim_token=won.token,
            message=HOSTILE,
            fields={"errorMessage": HOSTILE, "errorCategory": "validation", "errorType": "X"},
        )
        await connection.collection().update_one(
            {"executionId": execution_id}, {"$set": {"taskId": EVIL_TASK}}
        )
        return execution_id
    finally:
        await tracker.disconnect()


@pytest.fixture(scope="module")
def seeded(cli_backend: str) -> tuple[CliState, str]:
    database = f"tracker_cli_hostile_{uuid.uuid4().hex[:8]}"
    execution_id = asyncio.run(_seed(database))
    return cli_state(database, cli_backend), execution_id


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state)


def assert_clean_exit(result: Result) -> None:
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output


def test_database_values_never_reach_the_terminal_raw(seeded: tuple[CliState, str]) -> None:
    # Given: a dead letter whose ids, message and payload hold terminal escape sequences
    state, execution_id = seeded
    # When / Then: no escape character reaches the terminal, whatever the command
    for args in (
        ["dlq", "list"],
        ["groups", "list"],
        ["dlq", "show", execution_id],
        ["stats"],
    ):
        result = cli(state, *args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output, args
        assert "\x07" not in result.output, args
    shown = cli(state, "dlq", "show", execution_id).output
    assert "\\x1b]0;owned\\x07" in shown


def test_json_output_is_json_and_keeps_the_value(seeded: tuple[CliState, str]) -> None:
    state, execution_id = seeded
    record = json.loads(cli(state, "dlq", "show", execution_id, "--json").stdout)
    assert record["errorMessage"] == HOSTILE
    [entry] = json.loads(cli(state, "dlq", "list", "--json").stdout)
    assert entry["errorMessage"] == HOSTILE
    # times in one width, UTC to the millisecond, whichever backend read them
    times = [v for k, v in {**record, **entry}.items() if k.endswith("At") and v is not None]
    assert {"failedAt", "updatedAt"} <= {k for k in record if k.endswith("At")}
    assert times
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times), times


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_the_parsers_accept_a_value_or_say_why(text: str) -> None:
    for parameter in (DURATION, ID, LIMIT):
        try:
            value = parameter.convert(text, None, None)
        except click.BadParameter as refused:
            message = refused.message
            assert message
            continue
        if parameter is DURATION:
            assert 0 <= value <= 100 * 365 * 86400
        elif parameter is LIMIT:
            assert 1 <= value <= 10_000


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(COMMANDS),
    text=st.text(max_size=40) | st.sampled_from(["99999999999d", "-1", "0", "1e999", HOSTILE]),
)
def test_any_argument_ends_in_a_clean_exit(
    seeded: tuple[CliState, str], command: list[str], text: str
) -> None:
    state, _ = seeded
    args = [text if part == "{x}" else part for part in command]
    result = cli(state, *args)
    assert_clean_exit(result)
    assert "\x1b" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stuck", "--older-than", "99999999999d"], "at most 100 years"),
        (["dlq", "list", "--limit", "0"], "0 is not in the range 1<=x<=10000"),
        (["dlq", "list", "--limit", "-1"], "-1 is not in the range"),
        (["stuck", "--limit", "0"], "0 is not in the range 1<=x<=10000"),
        (["dlq", "list", "--group"], "`--group ID` selects that group's dead letters"),
        (["status", "a\x00b"], "must not contain control characters"),
        (["status", "x" * 600], "over the 512-character limit"),
        (["serve", "consumers.reports", "-c", "0"], "0 is not in the range 1<=x<=10000"),
        (["serve", "consumers.reports", "-c", "99999999999"], "is not in the range"),
    ],
)
def test_bounds_are_usage_errors_that_say_the_bound(
    seeded: tuple[CliState, str], args: list[str], message: str
) -> None:
    state, _ = seeded
    result = cli(state, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unexpected_error_is_one_line_unless_debug(
    seeded: tuple[CliState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a command that fails in a way nobody expected
    state, _ = seeded

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("the stats broke\nsecond line")

    monkeypatch.setattr(tracker.TaskTracker, "get_queue_stats", broken)
    # When
    plain = cli(state, "stats", "--queue", "hostile-q")
    # Then: one line (a service keeps the details in its own log)
    assert plain.exit_code == 1
    if state.service is not None:
        # (the lines before it are the in-process service's own log)
        last = plain.output.splitlines()[-1]
        assert last.startswith("Error: the service answered 500: internal error")
        return
    assert plain.output.strip() == "Error: RuntimeError: the stats broke"
    debug = CliRunner().invoke(main, ["--debug", "stats", "--queue", "hostile-q"], obj=state)
    assert isinstance(debug.exception, RuntimeError)


def test_no_reachable_broker_node_is_one_line_naming_each_without_its_password(
    seeded: tuple[CliState, str],
) -> None:
    # Given: TRACKER_AMQP_URL lists two nodes, neither of which answers
    state, _ = seeded
    nodes = "amqp://guest:s3cret@127.0.0.1:1/,amqp://admin:hunter2@127.0.0.1:2/"
    unreachable = cli_state(
        state.in_memory_database or "",
        "service" if state.service else "direct",
        Settings(amqp_url=nodes),
    )
    # When: a command that publishes
    result = cli(unreachable, "dlq", "import", "--queue", "hostile-q", "--yes")
    # Then
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "no RabbitMQ node reachable of 127.0.0.1:1, 127.0.0.1:2" in line
    assert "check that RabbitMQ runs there and that TRACKER_AMQP_URL names it" in line
    assert "s3cret" not in line
    assert "hunter2" not in line
