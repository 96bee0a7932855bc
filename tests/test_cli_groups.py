"""`tracker groups` on the in-memory store, on MongoDB and through a service: listing,
showing, muting and resolving failure groups, audited under the operator's name; errors as
one line with a real exit code."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import pytest
from click.testing import CliRunner, Result

from tests.service_harness import OPERATOR, cli_state, on_store, through_service
from tracker.cli import main
from tracker.cli.app import CliState
from tracker.clock import utcnow
from tracker.operations import audit, groups
from tracker.settings import Settings

T = TypeVar("T")


def cli(state: CliState, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), obj=state, env=env)


def query(state: CliState, work: Callable[[], Awaitable[T]]) -> T:
    return on_store(state.in_memory_database or "", work)


@pytest.fixture
def seeded(cli_backend: str) -> tuple[CliState, list[str]]:
    """Two causes on one queue: the first seen three times, the second once."""
    state = cli_state(f"tracker_cli_groups_{uuid.uuid4().hex[:8]}", cli_backend, Settings())

    async def seed() -> list[str]:
        ids = []
        now = utcnow()
        for n in range(3):
            at = now - timedelta(minutes=10 - n)
            ids.append(
                await groups.note_dead_letter("reports", "validation", "E", f"bad {n}", f"e{n}", at)
            )
        ids.append(await groups.note_dead_letter("reports", "partner_api", "P", "503", "e9", now))
        return sorted(set(ids), key=ids.index)

    return state, query(state, seed)


def test_list_and_show(seeded: tuple[CliState, list[str]]) -> None:
    # Given
    state, (bad, partner) = seeded
    # When
    listed = json.loads(cli(state, "groups", "list", "--json").stdout)
    human = cli(state, "groups", "list", "--queue", "reports").stdout
    shown = json.loads(cli(state, "groups", "show", bad, "--json").stdout)
    # Then
    assert [(g["id"], g["count"]) for g in listed["items"]] == [(partner, 1), (bad, 3)]
    assert listed["nextCursor"] is None
    assert bad in human
    assert "LAST SEEN" in human
    assert (shown["state"], shown["signature"], shown["deadLettersLeft"]) == (
        "open",
        "bad <n>",
        0,
    )


def test_paging_follows_the_printed_cursor(seeded: tuple[CliState, list[str]]) -> None:
    state, ids = seeded
    first = json.loads(cli(state, "groups", "list", "--limit", "1", "--json").stdout)
    cursor = first["nextCursor"]
    rest = json.loads(
        cli(state, "groups", "list", "--limit", "1", "--cursor", cursor, "--json").stdout
    )
    assert [g["id"] for g in first["items"] + rest["items"]] == ids[::-1]
    bad = cli(state, "groups", "list", "--cursor", "bm90IGEgY3Vyc29y")
    assert (bad.exit_code, bad.output.count("\n")) == (1, 1)
    assert "cursor" in bad.output


def test_actions_are_audited_under_the_operator(seeded: tuple[CliState, list[str]]) -> None:
    # Given: on MongoDB the operator names themself; a service knows them by their token
    state, (bad, _) = seeded
    env = {"TRACKER_ACTOR": "ana"}
    resolver, via = ("ana", "api") if state.service else ("ben", "cli")
    # When
    muted = cli(state, "groups", "mute", bad[:5], "--reason", "known", "--json", env=env)
    resolved = cli(state, "groups", "resolve", bad, "--by", resolver)
    again = cli(state, "groups", "resolve", bad)
    unmuted = cli(state, "groups", "unmute", bad)
    # Then
    assert json.loads(muted.stdout)["muted"] is True
    assert resolved.stdout.strip() == f"group {bad}: resolved (muted), 3 dead letters"
    assert again.exit_code == 1
    assert again.output.strip() == f"Error: failure group {bad} is resolved already"
    assert unmuted.exit_code == 0
    entries = query(state, lambda: audit.entries(target=f"group:{bad}"))
    done = sorted((e.action, e.actor, e.via, e.reason) for e in entries.items)
    assert ("group.mute", "ana", via, "known") in done
    assert ("group.resolve", resolver, via, None) in done


def test_through_a_service_by_must_be_the_token_s_name() -> None:
    # Given: a group, operated through a service whose token is ana's
    state = through_service(f"tracker_cli_by_{uuid.uuid4().hex[:8]}")
    bad = query(state, lambda: groups.note_dead_letter("q", "validation", "E", "bad", "e1"))
    # When: someone else is named
    refused = cli(state, "groups", "mute", bad, "--by", "ben")
    # Then: refused before anything changed, saying who the token is
    assert refused.exit_code == 2
    assert f"you act as {OPERATOR.name!r}" in refused.output
    assert json.loads(cli(state, "groups", "show", bad, "--json").stdout)["muted"] is False


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["groups", "show", "0000000000000000"], 1),
        (["groups", "mute", "0000000000000000"], 1),
        (["groups", "show", ""], 2),
        (["groups", "list", "--queue", "no-such-queue"], 1),
        (["groups", "show", "\x1b[2J"], 2),
        (["groups", "list", "--state", "closed"], 2),
        (["groups", "list", "--limit", "501"], 2),
        (["groups", "resolve", "x", "--by", "\x1b]0;owned\x07"], 2),
    ],
)
def test_bad_input_is_one_line_and_a_real_exit_code(
    seeded: tuple[CliState, list[str]], args: list[str], code: int
) -> None:
    state, _ = seeded
    result = cli(state, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output
