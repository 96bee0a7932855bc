"""Commands that lead to each other, on MongoDB and through a service: every id a command
prints is one the others take (an execution's, a task's, or the start of either; an
ambiguous start lists what it could be), task columns wherever executions are listed, one
meaning of --group, bounded --limit with "N of M shown", and a name that matches nothing
is exit 1 with a message."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service_harness import cli_state, on_store
from tracker import TaskStatus, claim, create_execution, transition
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.operations import groups
from tracker.settings import Settings

T = TypeVar("T")


async def _attempt(task_id: str, queue: str, status: TaskStatus, message: str = "") -> str:
    created = await create_execution(task_id, queue, {"task": task_id})
    execution_id = created.execution.execution_id
    if status is TaskStatus.QUEUED:
        return execution_id
    won = await claim(execution_id, worker="w", lease=60)
    fields = {"errorMessage": message, "errorCategory": "processing", "errorType": "E"}
    if status is TaskStatus.DLQ:
        gid = await groups.note_dead_letter(queue, "processing", "E", message, execution_id)
        fields["groupId"] = gid
    await transition(execution_id, status, claim_token=won.token, fields=fields)
    return execution_id


@pytest.fixture
def seeded(cli_backend: str) -> tuple[CliState, str, dict[str, Any]]:
    """On one queue: task alpha-1 failed once then dead-lettered, alpha-2 dead-lettered
    (both of one cause), beta completed, gamma dead-lettered of another cause."""
    database = f"tracker_links_{uuid.uuid4().hex[:8]}"
    queue = f"links-{uuid.uuid4().hex[:6]}"

    async def seed() -> dict[str, Any]:
        ids: dict[str, Any] = {}
        ids["alpha-1 failed"] = await _attempt("alpha-1", queue, TaskStatus.FAILED, "timeout")
        ids["alpha-1"] = await _attempt("alpha-1", queue, TaskStatus.DLQ, "partner said 503")
        ids["alpha-2"] = await _attempt("alpha-2", queue, TaskStatus.DLQ, "partner said 502")
        ids["beta"] = await _attempt("beta", queue, TaskStatus.COMPLETED)
        ids["gamma"] = await _attempt("gamma", queue, TaskStatus.DLQ, "no such format")
        ids["group"] = (await groups.list_groups(queue=queue)).items
        return ids

    ids = on_store(database, seed)
    ids["partner"] = next(g.id for g in ids.pop("group") if "partner" in g.signature)
    return cli_state(database, cli_backend, Settings()), queue, ids


def cli(state: CliState, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=state)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_takes_a_task_an_execution_or_the_start_of_either(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    # Given
    state, _, ids = seeded
    chain = [ids["alpha-1 failed"], ids["alpha-1"]]
    # When / Then: each names alpha-1's chain
    for named in ("alpha-1", ids["alpha-1"], ids["alpha-1"][:12], ids["alpha-1 failed"]):
        shown = as_json(cli(state, "status", named, "--json"))
        assert shown["taskId"] == "alpha-1", named
        assert [e["executionId"] for e in shown["executions"]] == chain


def test_an_ambiguous_start_lists_what_it_could_be(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    # Given
    state, _, _ = seeded
    # When
    result = cli(state, "status", "alpha")
    # Then
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line == (
        "Error: 'alpha' is the start of several: task alpha-1, task alpha-2; give more of it"
    )


def test_dlq_show_takes_a_task_for_its_newest_dead_letter(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    state, _, ids = seeded
    by_task = as_json(cli(state, "dlq", "show", "alpha-1", "--json"))
    by_start = as_json(cli(state, "dlq", "show", ids["gamma"][:10], "--json"))
    completed = as_json(cli(state, "dlq", "show", "beta", "--json"))
    assert (by_task["executionId"], by_task["status"]) == (ids["alpha-1"], "dlq")
    assert by_start["executionId"] == ids["gamma"]
    assert (completed["executionId"], completed["status"]) == (ids["beta"], "completed")
    nothing = cli(state, "dlq", "show", "delta")
    assert (nothing.exit_code, nothing.output) == (
        1,
        "Error: no execution or task matches 'delta'\n",
    )


def test_every_list_of_executions_has_the_task(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    state, queue, _ = seeded
    table = cli(state, "dlq", "list", "--queue", queue).stdout
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["EXECUTION", "TASK", "QUEUE"]
    assert sorted(row.split()[1] for row in rows) == ["alpha-1", "alpha-2", "gamma"]
    retry = cli(state, "dlq", "retry", "--queue", queue, "--dry-run").stdout
    assert retry.splitlines()[0].split()[:2] == ["EXECUTION", "TASK"]


def test_group_means_one_group_s_dead_letters_everywhere(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    # Given: the partner group, named by the start of its id
    state, _, ids = seeded
    start = ids["partner"][:6]
    # When
    listed = as_json(cli(state, "dlq", "list", "--group", start, "--json"))
    retried = cli(state, "dlq", "retry", "--group", start, "--dry-run", "--json")
    archived = cli(state, "dlq", "archive", "--group", start, "--reason", "r", "--dry-run")
    shown = as_json(cli(state, "groups", "show", start, "--json"))
    # Then
    expected = sorted([ids["alpha-1"], ids["alpha-2"]])
    assert sorted(e["executionId"] for e in listed) == expected
    assert sorted(r["executionId"] for r in as_json(retried)["results"]) == expected
    assert archived.exit_code == 0
    assert (shown["id"], shown["deadLettersLeft"]) == (ids["partner"], 2)


def test_a_task_id_selects_its_dead_letters(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    state, _, ids = seeded
    done = as_json(
        cli(state, "dlq", "archive", "alpha-2", "gamma", "-r", "seen", "--yes", "--json")
    )
    assert sorted(r["executionId"] for r in done["results"]) == sorted(
        [ids["alpha-2"], ids["gamma"]]
    )
    beta = cli(state, "dlq", "archive", "beta", "-r", "x", "--yes")
    assert (beta.exit_code, beta.output) == (1, "Error: task beta has no dead letter\n")


def test_limit_says_how_many_of_how_many(seeded: tuple[CliState, str, dict[str, Any]]) -> None:
    state, queue, _ = seeded
    table = cli(state, "dlq", "list", "--queue", queue, "--limit", "2")
    assert table.stdout.splitlines()[-1] == "2 of 3 shown"
    as_json_out = cli(state, "dlq", "list", "--queue", queue, "--limit", "2", "--json")
    assert len(json.loads(as_json_out.stdout)) == 2
    assert as_json_out.stderr == "2 of 3 shown\n"
    everything = cli(state, "dlq", "list", "--queue", queue)
    assert "shown" not in everything.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "retry", "--group", "nope", "--yes"], "no failure group matches 'nope'"),
        (["dlq", "list", "--queue", "nothing-here"], "no executions in queue 'nothing-here'"),
        (["dlq", "archive", "--queue", "nothing-here", "-r", "x", "--yes"], "no executions in"),
        (["stats", "--queue", "nothing-here"], "no executions in queue 'nothing-here'"),
        (["replay", "status", "nope"], "no replay matches 'nope'"),
        (["groups", "mute", "nope"], "no failure group matches 'nope'"),
    ],
)
def test_naming_what_does_not_exist_is_exit_1_saying_so(
    seeded: tuple[CliState, str, dict[str, Any]], args: list[str], message: str
) -> None:
    state, _, _ = seeded
    result = cli(state, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.splitlines()) == 1


def test_naming_a_queue_whose_dead_letters_are_gone_is_exit_1_for_an_action(
    seeded: tuple[CliState, str, dict[str, Any]],
) -> None:
    # Given: every dead letter of the queue archived
    state, queue, _ = seeded
    assert cli(state, "dlq", "archive", "--queue", queue, "-r", "x", "--yes").exit_code == 0
    # When
    listed = cli(state, "dlq", "list", "--queue", queue)
    retried = cli(state, "dlq", "retry", "--queue", queue, "--yes")
    # Then: an empty list is an answer; an action on nothing is not
    assert (listed.exit_code, listed.stdout) == (0, "(none)\n")
    assert retried.exit_code == 1
    assert "nothing matched" in retried.output


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=st.text(min_size=1, max_size=12))
def test_any_start_of_an_id_is_one_answer_or_one_line(
    seeded: tuple[CliState, str, dict[str, Any]], start: str
) -> None:
    state, _, _ = seeded
    for args in (["status", start], ["dlq", "show", start], ["groups", "show", start]):
        result = cli(state, *args)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        if result.exit_code == 1:
            assert len(result.output.splitlines()) == 1, result.output
