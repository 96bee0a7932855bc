"""Counting the commands the PyMongo client sends, by name (a ``CommandListener``)."""

from __future__ import annotations

from collections import Counter
from typing import Final

from pymongo import monitoring

# The commands that read or write documents: what a MongoDB round trip of the tracker is.
CRUD: Final = frozenset(
    {"insert", "update", "delete", "find", "findAndModify", "aggregate", "count", "getMore"}
)


class CommandCounter(monitoring.CommandListener):
    """Counts every command started by every client created after ``register()``."""

    def __init__(self) -> None:
        self.started_by_name: Counter[str] = Counter()
        self.failed_by_name: Counter[str] = Counter()

    def register(self) -> CommandCounter:
        monitoring.register(self)
        return self

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.started_by_name[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failed_by_name[event.command_name] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.started_by_name)


def crud(counts: Counter[str]) -> Counter[str]:
    """Only the CRUD commands of ``counts``."""
    return Counter({name: n for name, n in counts.items() if name in CRUD and n})


def since(before: Counter[str], after: Counter[str]) -> Counter[str]:
    """The commands started between two snapshots."""
    return Counter({name: n - before[name] for name, n in after.items() if n - before[name]})
