"""What one phase measured, and the figures derived from it."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from bench.cpu import Window
from bench.mongo_commands import crud


@dataclass(frozen=True)
class Phase:
    """``messages`` through one phase in ``window``; ``commands``: MongoDB commands the
    client sent meanwhile, by name (none for the bare phases); ``latencies``: per message,
    seconds, by what was timed; ``outcomes``: how the deliveries were settled."""

    messages: int
    window: Window
    commands: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    deduplicated: int = 0
    redelivered: int = 0  # deliveries flagged redelivered: the round was disturbed

    @property
    def rate(self) -> float:
        return self.messages / self.window.seconds

    @property
    def cpu_us(self) -> float:
        """This process's CPU per message, microseconds."""
        return self.window.cpu * 1e6 / self.messages

    def other_cpu_us(self, name: str) -> float | None:
        seconds = self.window.others.get(name)
        return None if seconds is None else seconds * 1e6 / self.messages

    @property
    def round_trips(self) -> float:
        """CRUD commands per message."""
        return sum(crud(self.commands).values()) / self.messages

    def per_message(self) -> dict[str, float]:
        return {name: n / self.messages for name, n in sorted(self.commands.items())}

    def percentile_ms(self, kind: str, q: float) -> float | None:
        values = self.latencies.get(kind)
        if not values:
            return None
        return percentile(values, q) * 1000


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank on the sorted values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Round:
    number: int
    bare_publish: Phase
    tracked_enqueue: Phase
    bare_consume: Phase
    tracked_consume: Phase

    @property
    def enqueue_ratio(self) -> float:
        return self.tracked_enqueue.rate / self.bare_publish.rate

    @property
    def consume_ratio(self) -> float:
        return self.tracked_consume.rate / self.bare_consume.rate


def spread(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)
