"""BSON values as MongoDB compares, hashes, copies and walks them.

The server keeps decoded Python values (dict, list, int, Int64, float, str, datetime, ObjectId,
...), so every comparison has to follow MongoDB's rules rather than Python's: 1 == 1.0 but
True != 1, documents compare field by field in order, and mixed types sort by a fixed type
order instead of raising.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp


class _Missing:
    """A field that is absent, which MongoDB tells apart from null in expressions."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()

UTC: Final = dt.UTC
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=UTC)
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# MongoDB's comparison order of BSON types (missing and null compare equal in queries and sorts).
RANK_MINKEY, RANK_NULL, RANK_NUMBER, RANK_STRING, RANK_OBJECT, RANK_ARRAY = 0, 1, 2, 3, 4, 5
RANK_BINARY, RANK_OBJECTID, RANK_BOOL, RANK_DATE, RANK_TIMESTAMP, RANK_REGEX = 6, 7, 8, 9, 10, 11
RANK_CODE, RANK_MAXKEY = 12, 13


def utcnow() -> dt.datetime:
    """The server clock at BSON's millisecond precision."""
    now = dt.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def date_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC, as BSON does."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # (value - EPOCH) // 1 ms, in integers: a timedelta's seconds and microseconds are never
    # negative, so the floor is the same.
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(0, 0, 0, ms)  # positional (milliseconds): kwargs cost more


# Type tuples for the hot isinstance checks: an ``X | Y`` union is built anew on every call.
_NUMBER_TYPES: Final = (int, float, Decimal128)
_REGEX_TYPES: Final = (Regex, re.Pattern)


def is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def number(value: Any) -> int | float | Decimal:
    """A numeric BSON value as a Python number that compares across int, float and decimal."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return value  # type: ignore[no-any-return]


def type_rank(value: Any) -> int:
    """The position of ``value``'s type in MongoDB's cross-type comparison order."""
    if value is None or value is MISSING:
        return RANK_NULL
    kind = type(value)
    if kind is str:
        return RANK_STRING
    if kind is bool:
        return RANK_BOOL
    if kind is int or kind is float or kind is Int64 or kind is Decimal128:
        return RANK_NUMBER
    if kind is dict or isinstance(value, dict):
        return RANK_OBJECT
    if kind is list or kind is tuple:
        return RANK_ARRAY
    if kind is ObjectId:
        return RANK_OBJECTID
    if isinstance(value, dt.datetime):
        return RANK_DATE
    if isinstance(value, bytes):
        return RANK_BINARY
    if isinstance(value, Timestamp):
        return RANK_TIMESTAMP
    if isinstance(value, _REGEX_TYPES):
        return RANK_REGEX
    if isinstance(value, MinKey):
        return RANK_MINKEY
    if isinstance(value, MaxKey):
        return RANK_MAXKEY
    if isinstance(value, Code):
        return RANK_CODE
    if isinstance(value, int | float):
        return RANK_NUMBER
    return RANK_CODE


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)  # type: ignore[no-any-return]


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 by MongoDB's order: first by type rank, then by value within the type."""
    rank_a, rank_b = type_rank(a), type_rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if rank_a == RANK_NUMBER:
        x, y = number(a), number(b)
        x_nan, y_nan = _is_nan(x), _is_nan(y)
        if x_nan or y_nan:  # NaN equals itself and sorts below every other number
            return (y_nan and not x_nan) - (x_nan and not y_nan)
        return _sign(x, y)
    if rank_a in (RANK_STRING, RANK_BOOL, RANK_CODE):
        return _sign(str(a), str(b)) if rank_a == RANK_CODE else _sign(a, b)
    if rank_a == RANK_OBJECT:
        for (key_a, val_a), (key_b, val_b) in zip(a.items(), b.items(), strict=False):
            order = _sign(type_rank(val_a), type_rank(val_b)) or _sign(key_a, key_b)
            order = order or compare(val_a, val_b)
            if order:
                return order
        return _sign(len(a), len(b))
    if rank_a == RANK_ARRAY:
        for item_a, item_b in zip(a, b, strict=False):
            order = compare(item_a, item_b)
            if order:
                return order
        return _sign(len(a), len(b))
    if rank_a == RANK_OBJECTID:
        return _sign(a.binary, b.binary)
    if rank_a == RANK_DATE:
        return _sign(date_ms(a), date_ms(b))
    if rank_a == RANK_BINARY:
        return _sign((len(a), _subtype(a), bytes(a)), (len(b), _subtype(b), bytes(b)))
    if rank_a == RANK_TIMESTAMP:
        return _sign((a.time, a.inc), (b.time, b.inc))
    if rank_a == RANK_REGEX:
        return _sign(_regex_parts(a), _regex_parts(b))
    return 0


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | Decimal) and value != value


def _subtype(value: bytes) -> int:
    return value.subtype if isinstance(value, Binary) else 0


def _regex_parts(value: Any) -> tuple[str, int]:
    return (str(value.pattern), int(value.flags))


_NULL_KEY: Final = ("\0null",)
_NAN_KEY: Final = ("\0nan",)


def hkey(value: Any) -> Any:
    """A hashable key that is equal for two values exactly when MongoDB finds them equal.

    Python already makes 1, 1.0 and Decimal('1') equal with equal hashes; booleans, dates,
    documents and arrays get tagged tuples so that True != 1 and field order counts.
    """
    kind = type(value)
    if kind is str or kind is ObjectId:
        return value
    if kind is bool:
        return ("\0bool", value)
    if kind is int or kind is Int64:
        return int(value)
    if kind is float:
        return _NAN_KEY if value != value else value
    if value is None or value is MISSING:
        return _NULL_KEY
    if kind is dict or isinstance(value, dict):
        return ("\0obj", *((key, hkey(item)) for key, item in value.items()))
    if kind is list or kind is tuple:
        return ("\0arr", *(hkey(item) for item in value))
    if isinstance(value, dt.datetime):
        return ("\0date", date_ms(value))
    if kind is Decimal128:
        decimal = value.to_decimal()
        return _NAN_KEY if decimal.is_nan() else decimal
    if isinstance(value, bytes):
        return ("\0bin", _subtype(value), bytes(value))
    if isinstance(value, Timestamp):
        return ("\0ts", value.time, value.inc)
    if isinstance(value, _REGEX_TYPES):
        return ("\0re", *_regex_parts(value))
    if isinstance(value, MinKey | MaxKey):
        return ("\0" + type(value).__name__,)
    return ("\0other", repr(value))


NULL_KEY: Final = _NULL_KEY

_EXACT: Final = frozenset({str, int, float, ObjectId, dt.datetime})


def equal(a: Any, b: Any) -> bool:
    """MongoDB equality, with a fast path for the common same-type scalars."""
    kind = type(a)
    if kind is type(b) and kind in _EXACT and kind is not float:
        return bool(a == b)
    return bool(hkey(a) == hkey(b))


def clone(value: Any) -> Any:
    """A deep copy of documents and arrays; every other BSON value is immutable."""
    kind = type(value)
    if kind is dict:
        return {key: clone(item) for key, item in value.items()}
    if kind is list:
        return [clone(item) for item in value]
    return value


def truthy(value: Any) -> bool:
    """Aggregation truthiness: false, null, missing and numeric zero are false."""
    if value is True:
        return True
    if value is None or value is MISSING or value is False:
        return False
    if is_number(value):
        return bool(number(value) != 0)
    return True


# ---------------------------------------------------------------------------------------------
# Paths


def query_leaves(value: Any, parts: list[str], start: int = 0) -> list[Any]:
    """The values a query path reaches, walking into array elements as MongoDB does.

    A branch that ends without the field yields MISSING, so ``{a: null}`` and ``$exists`` can
    tell a missing field from a present one. A leaf that is an array is returned whole; the
    operators decide whether to look at its elements.
    """
    for index in range(start, len(parts)):
        part = parts[index]
        if type(value) is dict:
            value = value.get(part, MISSING)
            if value is MISSING:
                return [MISSING]
        elif type(value) is list:
            found: list[Any] = []
            if part.isdigit() and int(part) < len(value):
                found.extend(query_leaves(value[int(part)], parts, index + 1))
            for item in value:
                if type(item) is dict:
                    found.extend(query_leaves(item, parts, index))
            return found or [MISSING]
        else:
            return [MISSING]
    return [value]


def expression_path(value: Any, parts: list[str]) -> Any:
    """A ``$a.b`` field path in an aggregation expression: arrays map to arrays of results."""
    for index, part in enumerate(parts):
        if type(value) is dict:
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif type(value) is list:
            found = []
            for item in value:
                if type(item) is dict or type(item) is list:
                    result = expression_path(item, parts[index:])
                    if result is not MISSING:
                        found.append(result)
            return found
        else:
            return MISSING
    return value


def get_path(doc: Any, parts: list[str]) -> Any:
    """The value at a path by plain navigation (array positions by index), or MISSING."""
    value = doc
    for part in parts:
        if type(value) is dict:
            value = value.get(part, MISSING)
        elif type(value) is list and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def set_path_copy(doc: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    """``doc`` with ``value`` at the path, copying only the documents along the path.

    Stored documents are never changed in place (cursors and results share them), so an
    aggregation stage writes through copies. A non-document on the way is replaced, as
    ``$set`` in a pipeline does.
    """
    result = dict(doc)
    if len(parts) == 1:
        if value is MISSING:
            result.pop(parts[0], None)
        else:
            result[parts[0]] = value
        return result
    child = doc.get(parts[0])
    if type(child) is list:
        result[parts[0]] = [
            set_path_copy(item, parts[1:], value) if type(item) is dict else item for item in child
        ]
        return result
    result[parts[0]] = set_path_copy(child if type(child) is dict else {}, parts[1:], value)
    return result


# ---------------------------------------------------------------------------------------------
# Type names and display

_TYPE_CODES: Final[dict[int | str, str]] = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    6: "undefined",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    13: "javascript",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    -1: "minKey",
    127: "maxKey",
}
TYPE_ALIASES: Final[dict[int | str, str]] = {
    **_TYPE_CODES,
    **{name: name for name in _TYPE_CODES.values()},
    "number": "number",
}


def type_name(value: Any) -> str:
    """The BSON type name ``$type`` reports."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is Int64:
        return "long"
    if kind is int:
        return "int" if INT32_MIN <= value <= INT32_MAX else "long"
    names: list[tuple[type | tuple[type, ...], str]] = [
        (float, "double"),
        (str, "string"),
        (dict, "object"),
        (list, "array"),
        (ObjectId, "objectId"),
        (dt.datetime, "date"),
        (Decimal128, "decimal"),
        (bytes, "binData"),
        (Timestamp, "timestamp"),
        ((Regex, re.Pattern), "regex"),
        (MinKey, "minKey"),
        (MaxKey, "maxKey"),
        (Code, "javascript"),
    ]
    for types, name in names:
        if isinstance(value, types):
            return name
    return "object"


def shell_repr(value: Any) -> str:
    """A value as the server prints it in error messages (``dup key: { a: "x" }``)."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, ObjectId):
        return f"ObjectId('{value}')"
    if isinstance(value, dt.datetime):
        return f"new Date({date_ms(value)})"
    if isinstance(value, dict):
        inner = ", ".join(f"{key}: {shell_repr(item)}" for key, item in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        inner = ", ".join(shell_repr(item) for item in value)
        return f"[ {inner} ]" if inner else "[]"
    return str(value)


def as_regex(value: Any, options: str = "") -> re.Pattern[str]:
    """A Python pattern for a ``$regex`` string or BSON Regex with MongoDB's option letters."""
    if isinstance(value, re.Pattern):
        return value
    if isinstance(value, Regex):
        pattern, flags = str(value.pattern), int(value.flags)
    else:
        pattern, flags = str(value), 0
    letters = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
    for letter in options:
        flags |= letters.get(letter, 0)
    return re.compile(pattern, flags)


def is_regex(value: Any) -> bool:
    return isinstance(value, _REGEX_TYPES)


def flatten(leaves: Iterable[Any]) -> list[Any]:
    """The leaves plus the elements of array leaves: what comparisons in a query look at."""
    out: list[Any] = []
    for leaf in leaves:
        if leaf is MISSING:
            continue
        out.append(leaf)
        if type(leaf) is list:
            out.extend(leaf)
    return out


def sort_key(value: Any) -> tuple[Any, ...]:
    """A Python sort key that orders values as ``compare`` does, for fast sorting."""
    rank = type_rank(value)
    if rank == RANK_NUMBER:
        plain = number(value)
        return (rank, 0, 0) if plain != plain else (rank, 1, plain)
    if rank in (RANK_STRING, RANK_BOOL):
        return (rank, value)
    if rank == RANK_OBJECT:
        return (rank, tuple((type_rank(item), key, sort_key(item)) for key, item in value.items()))
    if rank == RANK_ARRAY:
        return (rank, tuple(sort_key(item) for item in value))
    if rank == RANK_OBJECTID:
        return (rank, value.binary)
    if rank == RANK_DATE:
        return (rank, date_ms(value))
    if rank == RANK_BINARY:
        return (rank, len(value), _subtype(value), bytes(value))
    if rank == RANK_TIMESTAMP:
        return (rank, value.time, value.inc)
    if rank == RANK_REGEX:
        return (rank, *_regex_parts(value))
    if rank == RANK_CODE:
        return (rank, str(value))
    return (rank,)
