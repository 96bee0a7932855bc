"""Turning what the operator typed into the one thing it names: a whole id or the start of
one (``5b0e`` for ``5b0e9c…``), of an execution, a task, a failure group or a replay. An
exact id wins; a prefix must name one thing, else the command lists what it begins."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from tracker.errors import NotFoundError

if TYPE_CHECKING:
    from tracker.cli.backend import Backend
    from tracker.operations.ids import IdMatch, Kind

_NAMES = {"execution": "execution", "task": "task", "group": "failure group", "replay": "replay"}


class AmbiguousIdError(ValueError):
    """A prefix that begins more than one thing."""


def by_id(match: IdMatch) -> Hashable:
    return (match.kind, match.id)


def by_task(match: IdMatch) -> Hashable:
    """Executions and tasks of one task are one answer (for commands about a task)."""
    return match.task_id or match.id


async def one(
    backend: Backend,
    text: str,
    kinds: Sequence[Kind],
    key: Callable[[IdMatch], Hashable] = by_id,
) -> IdMatch:
    """What ``text`` names among ``kinds`` (an exact id first, in the order of ``kinds``),
    or what it is the start of when all that shares one ``key``. ``NotFoundError`` when
    nothing matches, ``AmbiguousIdError`` listing the candidates when several do."""
    found = await backend.find_ids(text, kinds)
    if found.exact:
        return found.exact[0]
    if not found.prefixed:
        what = " or ".join(_NAMES[kind] for kind in kinds)
        raise NotFoundError(f"no {what} matches {text!r}")
    if len({key(match) for match in found.prefixed}) == 1 and not found.more:
        return found.prefixed[0]
    listed = ", ".join(_candidate(match) for match in found.prefixed)
    more = ", and more" if found.more else ""
    raise AmbiguousIdError(f"{text!r} is the start of several: {listed}{more}; give more of it")


def _candidate(match: IdMatch) -> str:
    described = f"{_NAMES[match.kind]} {match.id}"
    if match.kind == "execution" and match.task_id:
        described += f" (task {match.task_id})"
    return described
