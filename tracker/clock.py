"""Time and identity helpers: every timestamp is timezone-aware UTC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Now, truncated to the millisecond as BSON stores it, so a value read back equals the
    value written."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """MongoDB returns naive datetimes unless the client is tz-aware; they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def seconds(value: float | timedelta) -> float:
    """A duration in seconds from seconds or a ``timedelta``; negative is an error."""
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if result < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return result


def new_execution_id() -> str:
    return str(uuid.uuid4())
