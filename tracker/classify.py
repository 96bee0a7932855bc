"""Turning an exception into one of the Mongoose schema's error categories."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Callable

from pymongo.errors import PyMongoError

from tracker.constants import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_STACK_CHARS
from tracker.errors import Reject, Retry, TaskFailure
from tracker.lifecycle import ErrorCategory
from tracker.validation import storable_text

Classifier = Callable[[BaseException], ErrorCategory | None]
"""A hook that names the category of an exception, or returns None to use the defaults."""

# Checked in order; the first class the exception is an instance of decides.
DEFAULT_CATEGORIES: tuple[tuple[type[BaseException], ErrorCategory], ...] = (
    (asyncio.TimeoutError, ErrorCategory.TRANSIENT),
    (TimeoutError, ErrorCategory.TRANSIENT),
    (ConnectionError, ErrorCategory.TRANSIENT),
    (PyMongoError, ErrorCategory.INFRASTRUCTURE),
    (PermissionError, ErrorCategory.INFRASTRUCTURE),
    (FileNotFoundError, ErrorCategory.INFRASTRUCTURE),
    (MemoryError, ErrorCategory.INFRASTRUCTURE),
    (OSError, ErrorCategory.INFRASTRUCTURE),
    (json.JSONDecodeError, ErrorCategory.VALIDATION),
    (UnicodeError, ErrorCategory.VALIDATION),
    (KeyError, ErrorCategory.VALIDATION),
    (ValueError, ErrorCategory.VALIDATION),
    (TypeError, ErrorCategory.PROCESSING),
    (AttributeError, ErrorCategory.PROCESSING),
    (LookupError, ErrorCategory.PROCESSING),
    (ArithmeticError, ErrorCategory.PROCESSING),
    (AssertionError, ErrorCategory.PROCESSING),
    (NotImplementedError, ErrorCategory.PROCESSING),
)


def classify(
    error: BaseException,
    *,
    hook: Classifier | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
) -> ErrorCategory:
    """The category of ``error``: the handler's own ``TaskFailure`` or ``Reject`` first, then
    ``hook``, then ``retry_on`` (always transient), then an HTTP-looking error (``partner_api``),
    then ``DEFAULT_CATEGORIES``, else ``unknown``."""
    if isinstance(error, TaskFailure):
        return error.category
    if isinstance(error, Reject):
        return error.category
    if isinstance(error, Retry):
        return ErrorCategory.TRANSIENT
    if hook is not None and (category := hook(error)) is not None:
        return ErrorCategory(category)
    if retry_on and isinstance(error, retry_on):
        return ErrorCategory.TRANSIENT
    if _http_status(error) is not None:
        return ErrorCategory.PARTNER_API
    for cls, category in DEFAULT_CATEGORIES:
        if isinstance(error, cls):
            return category
    return ErrorCategory.UNKNOWN


def _http_status(error: BaseException) -> int | None:
    """The status of an HTTP client's error (httpx, requests, aiohttp all expose one)."""
    for owner in (error, getattr(error, "response", None)):
        for attribute in ("status_code", "status"):
            value = getattr(owner, attribute, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def error_message(error: BaseException) -> str:
    """The message stored for ``error``: its type and text, the text escaped where MongoDB
    could not store it and cut to a bound; ``<unprintable>`` when ``str()`` raises."""
    try:
        text = str(error)
    except Exception:
        text = "<unprintable>"
    text = text or type(error).__name__
    message = f"{type(error).__name__}: {text}" if not isinstance(error, TaskFailure) else text
    return storable_text(message, MAX_ERROR_MESSAGE_CHARS)


def error_stack(error: BaseException) -> str:
    """The formatted traceback, keeping its end (where the error was raised) when too long."""
    try:
        stack = "".join(traceback.format_exception(error))
    except Exception as exc:  # a frame or an exception that cannot be formatted
        stack = f"<traceback could not be formatted: {type(exc).__name__}>"
    stack = storable_text(stack, len(stack) + 1)
    return stack if len(stack) <= MAX_ERROR_STACK_CHARS else "…" + stack[-MAX_ERROR_STACK_CHARS:]
