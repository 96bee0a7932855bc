"""Query parameters every list shares, with their bounds (a value out of bounds is a 400
before any query runs)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Query

MAX_PAGE: Final = 500

Cursor = Annotated[
    str | None,
    Query(max_length=1024, description="`next_cursor` of the previous page"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")]
Text = Annotated[str | None, Query(min_length=1, max_length=512)]
# Lists read whole up to a bound rather than by pages (dead letters, stuck executions): the
# command line's --limit.
Bound = Annotated[int, Query(ge=1, le=10_000, description="at most this many")]
Seconds = Annotated[float | None, Query(ge=0, le=100 * 365 * 86400, description="seconds")]
