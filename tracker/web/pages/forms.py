"""Reading the console's form posts and query strings: bounded text, optional numbers, and
the URL of a list's next page."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from starlette.datastructures import FormData

MAX_FIELD_CHARS = 1_000_000


def field(form: FormData, name: str, limit: int = 512) -> str | None:
    """A form field, stripped; None when absent or empty; ``ValueError`` over ``limit``."""
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > limit:
        raise ValueError(f"{name} is over {limit} characters")
    return value.strip()


def number(form: FormData, name: str) -> float | None:
    value = field(form, name, 32)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None


def integer(form: FormData, name: str) -> int | None:
    value = field(form, name, 32)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{name} must be a whole number")
    return int(value)


def moment(value: str | None) -> datetime | None:
    """A ``datetime-local`` input (read as UTC, as the console shows times) or ISO 8601."""
    if not value:
        return None
    if len(value) > 40:
        raise ValueError("a time is at most 40 characters")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time (YYYY-MM-DDTHH:MM)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def next_url(request: Request, cursor: str | None) -> str | None:
    """This page's URL with ``cursor`` (None: there is no next page)."""
    if cursor is None:
        return None
    url = request.url.include_query_params(cursor=cursor)
    return f"{url.path}?{url.query}"
