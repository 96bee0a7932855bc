"""Time as the server sees it, so that leases and stuck checks do not depend on the clock of
whichever worker wrote them: a worker with a skewed clock neither steals live claims nor
keeps dead ones.

Writes use the server's own clock: ``now()`` and ``later(seconds)`` are aggregation
expressions (``$$NOW``) for update pipelines. Queries and inserts, which cannot use
``$$NOW`` in an index-served filter or an inserted document, use ``estimate()``: this
process's clock corrected by the offset to the server's, measured from ``hello``.

The seam: the in-memory MongoDB (mongomock) has no ``$$NOW`` and no date arithmetic, so on
it both are this process's clock, as literals. It is one process, so there is no skew.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tracker.clock import as_utc, utcnow

NOW = "$$NOW"


class ServerClock:
    def __init__(self, in_memory: bool) -> None:
        self.in_memory = in_memory
        self.offset = timedelta(0)

    def observe(self, server_time: datetime, sent: datetime, received: datetime) -> None:
        """Take the server's ``localTime`` from a reply: the offset is measured against the
        middle of the round trip."""
        middle = sent + (received - sent) / 2
        self.offset = as_utc(server_time) - middle

    def estimate(self) -> datetime:
        """Now on the server, as this process best knows it (millisecond precision)."""
        now = utcnow() + self.offset
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def now(self) -> Any:
        """Now, in an update pipeline (take it once per write: every use of it in one write
        is then the same instant)."""
        return utcnow() if self.in_memory else NOW

    @staticmethod
    def later(now: Any, seconds: float) -> Any:
        """``seconds`` after ``now`` (what ``now()`` returned), in an update pipeline."""
        if isinstance(now, datetime):
            return now + timedelta(seconds=seconds)
        return {"$add": [now, round(seconds * 1000)]}


_current = ServerClock(in_memory=True)


def current() -> ServerClock:
    """The clock of the store this process is connected to."""
    return _current


def use(clock: ServerClock) -> None:
    global _current
    _current = clock
