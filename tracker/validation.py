"""The one check every boundary uses: ids, queue names and metadata are what the store can
hold, and never a query operator.

``check_id`` is for callers (a Python argument, a CLI option, an HTTP parameter) and raises:
``TypeError`` for a value that is not a string, ``ValueError`` for a string that is not
allowed. ``id_problem`` is for reading a delivery, where a problem is a reason to reject it,
not an exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from tracker.constants import DEADLINE_INFIX, DLQ_SUFFIX, RETRY_INFIX, TIMEOUTS_SUFFIX
from tracker.errors import ConfigurationError

MAX_ID_CHARS: Final = 512
MAX_QUEUE_CHARS: Final = 200
# Retry counts and budgets beyond this are not a real task's: arithmetic on them stays bounded.
MAX_COUNT: Final = 10_000
MAX_METADATA_KEYS: Final = 64
MAX_METADATA_BYTES: Final = 16 * 1024
# MongoDB refuses documents nested over 100 levels; the payload sits a level or two down.
MAX_NESTING: Final = 90
# C0 controls and DEL: never part of an id, and what rewrites an operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def id_problem(value: object, what: str = "id") -> str | None:
    """Why ``value`` cannot be an id (task id, execution id, queue name, worker id), or
    None. An id is a string of 1 to 512 characters, valid Unicode, without control
    characters."""
    if not isinstance(value, str):
        return f"{what} must be a string, not {type(value).__name__}"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"{what} is {len(value)} characters, over the {MAX_ID_CHARS}-character limit"
    if _CONTROL.search(value):
        return f"{what} must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (lone surrogates)"
    return None


def check_id(value: object, what: str = "id") -> str:
    """``value`` if it can be an id; ``TypeError`` or ``ValueError`` saying why not."""
    problem = id_problem(value, what)
    if problem is None:
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise TypeError(problem)
    raise ValueError(problem)


def check_optional_id(value: object, what: str = "id") -> str | None:
    return None if value is None else check_id(value, what)


class QueueNameError(ConfigurationError, ValueError):
    """A queue name that cannot be used."""


def check_queue(value: object) -> str:
    """``value`` if it can name a tracked work queue: an id of at most 200 characters that
    is not one of the tracker's own queues (``Q.dlq``, ``Q.retry.<d>``, ``Q.deadline.<t>``,
    ``Q.timeouts``)."""
    queue = check_id(value, "queue name")
    if len(queue) > MAX_QUEUE_CHARS:
        raise QueueNameError(f"a queue name must be 1 to {MAX_QUEUE_CHARS} characters")
    reserved = queue.endswith((DLQ_SUFFIX, TIMEOUTS_SUFFIX)) or any(
        infix in queue for infix in (RETRY_INFIX, DEADLINE_INFIX)
    )
    if reserved:
        raise QueueNameError(
            f"queue name {queue!r} is reserved: names ending in {DLQ_SUFFIX!r} or "
            f"{TIMEOUTS_SUFFIX!r}, or containing {RETRY_INFIX!r} or {DEADLINE_INFIX!r}, are "
            "the tracker's own queues"
        )
    return queue


# A metadata key operators search by (TRACKER_SEARCH_KEYS): it names an index, so it is plain.
_SEARCH_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def check_search_key(value: object) -> str:
    """``value`` if it can be a searchable metadata key: a letter or ``_``, then up to 63
    letters, digits, ``_`` or ``-``."""
    if not isinstance(value, str):
        raise TypeError(f"a metadata key must be a string, not {type(value).__name__}")
    if not _SEARCH_KEY.fullmatch(value):
        raise ValueError(
            f"metadata key {printable(value, 80)!r} is not a search key: a letter or '_', "
            "then up to 63 letters, digits, '_' or '-'"
        )
    return value


def check_count(value: object, what: str, maximum: int = MAX_COUNT) -> int:
    """``value`` if it is an integer from 0 to ``maximum`` (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} must be from 0 to {maximum}, not {value}")
    return value


def check_metadata(metadata: object) -> dict[str, Any]:
    """``metadata`` if it is a mapping the store can hold as plain fields: string keys that
    neither start with ``$`` nor contain ``.`` (they would read as operators or paths),
    bounded in number and size."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(metadata)} keys, over the {MAX_METADATA_KEYS} limit")
    _check_keys(metadata, "metadata")
    problem = storage_problem(dict(metadata), "metadata", MAX_METADATA_BYTES)
    if problem is not None:
        raise ValueError(problem)
    return dict(metadata)


def storage_problem(
    value: object, what: str, limit: int, *, check_nesting: bool = True
) -> str | None:
    """Why MongoDB cannot store ``value`` as a field (an integer beyond 64 bits, text that
    is not valid Unicode, nesting deeper than the server allows, over ``limit`` bytes), or
    None. ``check_nesting=False`` when the value cannot nest that deep (``may_nest_too_deep``
    says when a JSON text cannot)."""
    import bson
    import bson.errors

    if check_nesting and _deeper_than(value, MAX_NESTING):
        return f"{what} is nested more than {MAX_NESTING} levels deep"
    try:
        size = len(bson.encode({"v": value}))
    except (bson.errors.BSONError, OverflowError, ValueError, TypeError) as exc:
        return f"{what} cannot be stored: {type(exc).__name__}: {printable(str(exc))}"
    except Exception as exc:  # a custom object's encoder or __str__ raised
        return f"{what} cannot be stored: {type(exc).__name__}"
    if size > limit:
        return f"{what} is {size} bytes encoded, over the {limit}-byte limit"
    return None


def storable_text(text: str, limit: int) -> str:
    """``text`` as MongoDB can store it: lone surrogates escaped, cut to ``limit``
    characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str, limit: int = 2048) -> str:
    """``text`` safe to show in a terminal or a log line: what ``storable_text`` escapes,
    and control characters too (an escape sequence would rewrite the operator's screen)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", storable_text(text, limit))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def may_nest_too_deep(json_text: str) -> bool:
    """Whether the value of ``json_text`` may nest deeper than MongoDB allows: each level is
    a pair of brackets, so a text shorter than two per allowed level cannot."""
    return len(json_text) > 2 * MAX_NESTING


def _deeper_than(value: object, depth: int) -> bool:
    """Whether ``value`` nests documents or arrays more than ``depth`` levels (iterative:
    recursion would fail first on the very inputs this guards against)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level >= depth:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _check_keys(value: object, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, not {type(key).__name__}")
            if key.startswith("$") or "." in key or "\x00" in key:
                raise ValueError(f"{where} key {key!r} must not start with '$' or contain '.'")
            _check_keys(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item, where)
