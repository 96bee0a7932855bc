"""Aggregation expressions: what ``$expr``, pipeline updates and ``$project`` evaluate.

``$$NOW`` is the server's clock, fixed for the whole command as on a real server; the tracker
computes leases with it, so it must never come from the client.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

from bson import Decimal128, Int64, ObjectId, Timestamp

from tests.mongo_standin.errors import CommandError
from tests.mongo_standin.values import (
    INT32_MAX,
    INT32_MIN,
    MISSING,
    compare,
    date_ms,
    equal,
    expression_path,
    from_ms,
    is_number,
    number,
    truthy,
    type_name,
)

Variables = Mapping[str, Any]
_Op = Callable[[Any, Any, Variables], Any]


def evaluate(expr: Any, current: Any, variables: Variables) -> Any:
    """The value of ``expr`` for the document ``current``."""
    kind = type(expr)
    if kind is str:
        if expr.startswith("$"):
            return _path(expr, current, variables)
        return expr
    if kind is dict:
        if len(expr) == 1:
            first = next(iter(expr))
            if first.startswith("$"):
                operator = _OPERATORS.get(first)
                if operator is None:
                    raise CommandError(168, f"Unrecognized expression '{first}'")
                return operator(expr[first], current, variables)
        return _document(expr, current, variables)
    if kind is list:
        return [_or_null(evaluate(item, current, variables)) for item in expr]
    return expr


def _document(expr: dict[str, Any], current: Any, variables: Variables) -> Any:
    """A document of expressions (not an operator: ``evaluate`` takes those)."""
    if expr and next(iter(expr)).startswith("$"):
        raise CommandError(
            15983,
            "an expression specification must contain exactly one field, the name of "
            f"the expression. Found {len(expr)} fields in {expr}",
        )
    out = {}
    for key, item in expr.items():
        value = evaluate(item, current, variables)
        if value is not MISSING:
            out[key] = value
    return out


def _path(expr: str, current: Any, variables: Variables) -> Any:
    if expr.startswith("$$"):
        name, _, rest = expr[2:].partition(".")
        if name == "CURRENT":
            value = current
        elif name == "REMOVE":
            return MISSING
        elif name in variables:
            value = variables[name]
        else:
            raise CommandError(17276, f"Use of undefined variable: {name}")
        return expression_path(value, rest.split(".")) if rest else value
    if expr == "$":
        raise CommandError(16872, "'$' by itself is not a valid FieldPath")
    name = expr[1:]
    if type(current) is dict and "." not in name:
        return current.get(name, MISSING)  # a top-level field: the common case, made short
    return expression_path(current, name.split("."))


def _or_null(value: Any) -> Any:
    return None if value is MISSING else value


def _args(raw: Any, current: Any, variables: Variables) -> list[Any]:
    """Operator arguments: a list of expressions, or one expression standing alone."""
    if type(raw) is list:
        return [evaluate(item, current, variables) for item in raw]
    return [evaluate(raw, current, variables)]


def _fixed(name: str, count: int) -> Callable[[Any, Any, Variables], list[Any]]:
    def read(raw: Any, current: Any, variables: Variables) -> list[Any]:
        values = _args(raw, current, variables)
        if len(values) != count:
            raise CommandError(
                16020,
                f"Expression {name} takes exactly {count} arguments. {len(values)} were passed in.",
            )
        return values

    return read


def _nullish(value: Any) -> bool:
    return value is None or value is MISSING


def _any_nullish(values: list[Any]) -> bool:
    return any(value is None or value is MISSING for value in values)


# ---------------------------------------------------------------------------------------------
# Comparison and logic


def _expr_compare(a: Any, b: Any) -> int:
    """Missing sorts below null in expressions (``{$eq: ['$missing', null]}`` is false)."""
    if a is MISSING or b is MISSING:
        return (a is not MISSING) - (b is not MISSING)
    return compare(a, b)


def _comparison(name: str, test: Callable[[int], bool]) -> _Op:
    read = _fixed(name, 2)

    def op(raw: Any, current: Any, variables: Variables) -> Any:
        a, b = read(raw, current, variables)
        return test(_expr_compare(a, b))

    return op


def _cmp(raw: Any, current: Any, variables: Variables) -> Any:
    a, b = _fixed("$cmp", 2)(raw, current, variables)
    return _expr_compare(a, b)


def _and(raw: Any, current: Any, variables: Variables) -> Any:
    items = raw if type(raw) is list else [raw]
    return all(truthy(evaluate(item, current, variables)) for item in items)


def _or(raw: Any, current: Any, variables: Variables) -> Any:
    items = raw if type(raw) is list else [raw]
    return any(truthy(evaluate(item, current, variables)) for item in items)


def _not(raw: Any, current: Any, variables: Variables) -> Any:
    (value,) = _fixed("$not", 1)(raw, current, variables)
    return not truthy(value)


def _cond(raw: Any, current: Any, variables: Variables) -> Any:
    if type(raw) is dict:
        try:
            test, then, otherwise = raw["if"], raw["then"], raw["else"]
        except KeyError as missing:
            raise CommandError(17080, f"Missing '{missing.args[0]}' parameter to $cond") from None
    elif type(raw) is list and len(raw) == 3:
        test, then, otherwise = raw
    else:
        raise CommandError(16020, "Expression $cond takes exactly 3 arguments.")
    chosen = then if truthy(evaluate(test, current, variables)) else otherwise
    return evaluate(chosen, current, variables)


def _if_null(raw: Any, current: Any, variables: Variables) -> Any:
    if type(raw) is not list or len(raw) < 2:
        raise CommandError(1257300, "$ifNull needs at least two arguments")
    for item in raw[:-1]:
        value = evaluate(item, current, variables)
        if not _nullish(value):
            return value
    return evaluate(raw[-1], current, variables)


def _switch(raw: Any, current: Any, variables: Variables) -> Any:
    for branch in raw.get("branches", []):
        if truthy(evaluate(branch["case"], current, variables)):
            return evaluate(branch["then"], current, variables)
    if "default" not in raw:
        raise CommandError(
            40066, "$switch could not find a matching branch for an input, and no default"
        )
    return evaluate(raw["default"], current, variables)


# ---------------------------------------------------------------------------------------------
# Arithmetic and dates


def _integer(value: int, *inputs: Any) -> Any:
    """An integer result typed as the server types it: int32 unless a long is involved or
    the value overflows (a Python int encodes as int32 when it fits)."""
    if inputs and any(type(item) is Int64 for item in inputs):
        return Int64(value) if -(2**63) <= value < 2**63 else float(value)
    if not INT32_MIN <= value <= INT32_MAX:
        return Int64(value) if -(2**63) <= value < 2**63 else float(value)
    return value


def arithmetic(a: Any, b: Any, op: Callable[[Any, Any], Any]) -> Any:
    """``op`` on two BSON numbers with MongoDB's result type (decimal > double > long > int)."""
    if type(a) is int and type(b) is int:  # the common case, made short
        return _integer(op(a, b))
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        return Decimal128(op(Decimal(str(number(a))), Decimal(str(number(b)))))
    if isinstance(a, float) or isinstance(b, float):
        return float(op(float(a), float(b)))
    return _integer(op(int(a), int(b)), a, b)


def _numbers(name: str, values: list[Any]) -> None:
    for value in values:
        if not is_number(value) and not isinstance(value, dt.datetime):
            raise CommandError(
                16554, f"{name} only supports numeric or date types, not {type_name(value)}"
            )


def _add(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if len(values) == 2:  # a date and a number of milliseconds: the common case, made short
        first, second = values
        if type(second) is dt.datetime:
            first, second = second, first
        if type(first) is dt.datetime and type(second) is int and -(2**63) <= second < 2**63:
            return from_ms(date_ms(first) + second)
    if _any_nullish(values):
        return None
    _numbers("$add", values)
    dates = [value for value in values if isinstance(value, dt.datetime)]
    if len(dates) > 1:
        raise CommandError(16612, "only one date allowed in an $add expression")
    total: Any = 0
    for value in values:
        if not isinstance(value, dt.datetime):
            total = arithmetic(total, value, lambda x, y: x + y)
    if dates:
        return from_ms(date_ms(dates[0]) + round(number(total)))
    return total


def _subtract(raw: Any, current: Any, variables: Variables) -> Any:
    a, b = _fixed("$subtract", 2)(raw, current, variables)
    if _nullish(a) or _nullish(b):
        return None
    _numbers("$subtract", [a, b])
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return Int64(date_ms(a) - date_ms(b))
    if isinstance(a, dt.datetime):
        return from_ms(date_ms(a) - round(number(b)))
    if isinstance(b, dt.datetime):
        raise CommandError(16556, "cant $subtract a date from a number")
    return arithmetic(a, b, lambda x, y: x - y)


def _multiply(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if _any_nullish(values):
        return None
    total: Any = 1
    for value in values:
        if not is_number(value):
            raise CommandError(16555, f"$multiply only supports numeric types, not {value!r}")
        total = arithmetic(total, value, lambda x, y: x * y)
    return total


def _divide(raw: Any, current: Any, variables: Variables) -> Any:
    a, b = _fixed("$divide", 2)(raw, current, variables)
    if _nullish(a) or _nullish(b):
        return None
    if not is_number(a) or not is_number(b):
        raise CommandError(16609, "$divide only supports numeric types")
    if number(b) == 0:
        raise CommandError(2, "can't $divide by zero")
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        return Decimal128(Decimal(str(number(a))) / Decimal(str(number(b))))
    return float(number(a)) / float(number(b))


def _mod(raw: Any, current: Any, variables: Variables) -> Any:
    a, b = _fixed("$mod", 2)(raw, current, variables)
    if _nullish(a) or _nullish(b):
        return None
    if number(b) == 0:
        raise CommandError(16610, "can't $mod by zero")
    return arithmetic(a, b, lambda x, y: math.fmod(x, y) if isinstance(x, float) else _imod(x, y))


def _imod(x: Any, y: Any) -> Any:
    result = abs(x) % abs(y)
    return -result if x < 0 else result


def _unary_math(name: str, fn: Callable[[Any], Any]) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        (value,) = _fixed(name, 1)(raw, current, variables)
        if _nullish(value):
            return None
        if not is_number(value):
            raise CommandError(28765, f"{name} only supports numeric types")
        result = fn(number(value))
        if isinstance(value, int | Int64):
            return _integer(int(result), value)
        return float(result) if isinstance(value, float) else Decimal128(str(result))

    return op


def _extreme(pick: int) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        values = _args(raw, current, variables)
        if len(values) == 1 and type(values[0]) is list:
            values = values[0]
        best: Any = None
        for value in values:
            if _nullish(value):
                continue
            if best is None or compare(value, best) == pick:
                best = value
        return best

    return op


def _sum(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if len(values) == 1 and type(values[0]) is list:
        values = values[0]
    total: Any = 0
    for value in values:
        if is_number(value):
            total = arithmetic(total, value, lambda x, y: x + y)
    return total


def _avg(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if len(values) == 1 and type(values[0]) is list:
        values = values[0]
    numbers = [float(number(value)) for value in values if is_number(value)]
    return sum(numbers) / len(numbers) if numbers else None


_UNIT_MS: Final = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 604_800_000,
}
_UNIT_MONTHS: Final = {"month": 1, "quarter": 3, "year": 12}


def add_to_date(start: dt.datetime, unit: str, amount: int) -> dt.datetime:
    """``start`` moved by ``amount`` units in UTC; months clamp to the month's last day."""
    if unit in _UNIT_MS:
        return from_ms(date_ms(start) + amount * _UNIT_MS[unit])
    if unit not in _UNIT_MONTHS:
        raise CommandError(5166301, f"$dateAdd: unknown time unit value: {unit}")
    months = start.year * 12 + (start.month - 1) + amount * _UNIT_MONTHS[unit]
    year, month = divmod(months, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return start.replace(year=year, month=month + 1, day=day)


def _date_shift(name: str, sign: int) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        if type(raw) is not dict or not {"startDate", "unit", "amount"} <= raw.keys():
            raise CommandError(5166402, f"{name} requires startDate, unit, and amount")
        start = evaluate(raw["startDate"], current, variables)
        unit = evaluate(raw["unit"], current, variables)
        amount = evaluate(raw["amount"], current, variables)
        if _nullish(start) or _nullish(unit) or _nullish(amount):
            return None
        if not isinstance(start, dt.datetime):
            raise CommandError(5166403, f"{name} requires startDate to be convertible to a date")
        if not is_number(amount) or number(amount) != int(number(amount)):
            raise CommandError(5166405, f"{name} expects integer amount of time units")
        return add_to_date(start, str(unit), sign * int(number(amount)))

    return op


def to_date(value: Any) -> Any:
    if _nullish(value):
        return None
    if isinstance(value, dt.datetime):
        return value
    if is_number(value):
        return from_ms(int(number(value)))
    if isinstance(value, ObjectId):
        return value.generation_time
    if isinstance(value, Timestamp):
        return value.as_datetime()
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(241, f"Error parsing date string '{value}'") from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    raise CommandError(241, f"Unsupported conversion from {type_name(value)} to date")


# ---------------------------------------------------------------------------------------------
# Arrays, documents, strings, types


def _array_arg(name: str, value: Any) -> list[Any]:
    if type(value) is not list:
        raise CommandError(28664, f"{name} only supports arrays, not {type_name(value)}")
    return value


def _concat_arrays(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if _any_nullish(values):
        return None
    out: list[Any] = []
    for value in values:
        out.extend(_array_arg("$concatArrays", value))
    return out


def _slice(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if len(values) not in (2, 3):
        raise CommandError(28667, "Expression $slice takes at least 2 arguments, and at most 3")
    if _nullish(values[0]):
        return None
    array = _array_arg("$slice", values[0])
    if len(values) == 2:
        count = int(number(values[1]))
        return array[count:] if count < 0 else array[:count]
    position, count = int(number(values[1])), int(number(values[2]))
    if count <= 0:
        raise CommandError(28729, "Third argument to $slice must be positive")
    start = max(len(array) + position, 0) if position < 0 else position
    return array[start : start + count]


def _size(raw: Any, current: Any, variables: Variables) -> Any:
    (value,) = _fixed("$size", 1)(raw, current, variables)
    if type(value) is not list:
        raise CommandError(
            17124,
            f"The argument to $size must be an array. Type of given argument: {type_name(value)}",
        )
    return len(value)


def _in(raw: Any, current: Any, variables: Variables) -> Any:
    value, array = _fixed("$in", 2)(raw, current, variables)
    if type(array) is not list:
        raise CommandError(
            40081, f"$in requires an array as a second argument, found: {type_name(array)}"
        )
    return any(equal(value, item) for item in array)


def _array_elem_at(raw: Any, current: Any, variables: Variables) -> Any:
    array, index = _fixed("$arrayElemAt", 2)(raw, current, variables)
    if _nullish(array) or _nullish(index):
        return None
    array = _array_arg("$arrayElemAt", array)
    position = int(number(index))
    if -len(array) <= position < len(array):
        return array[position]
    return MISSING


def _end(position: int) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        (value,) = _fixed("$first" if position == 0 else "$last", 1)(raw, current, variables)
        if _nullish(value):
            return None
        array = _array_arg("$first" if position == 0 else "$last", value)
        return array[position] if array else MISSING

    return op


def _merge_objects(raw: Any, current: Any, variables: Variables) -> Any:
    out: dict[str, Any] = {}
    for value in _args(raw, current, variables):
        if _nullish(value):
            continue
        if type(value) is not dict:
            raise CommandError(
                40400,
                f"$mergeObjects requires object inputs, but input "
                f"{value!r} is of type {type_name(value)}",
            )
        out.update(value)
    return out


def _concat(raw: Any, current: Any, variables: Variables) -> Any:
    values = _args(raw, current, variables)
    if _any_nullish(values):
        return None
    if not all(isinstance(value, str) for value in values):
        raise CommandError(16702, "$concat only supports strings")
    return "".join(values)


def _type(raw: Any, current: Any, variables: Variables) -> Any:
    (value,) = _fixed("$type", 1)(raw, current, variables)
    return type_name(value)


def _is_array(raw: Any, current: Any, variables: Variables) -> Any:
    (value,) = _fixed("$isArray", 1)(raw, current, variables)
    return type(value) is list


def _literal(raw: Any, current: Any, variables: Variables) -> Any:
    return raw


def to_string(value: Any) -> Any:
    if _nullish(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{value.microsecond // 1000:03d}Z"
        )
    return str(value)


def _converter(name: str, convert: Callable[[Any], Any]) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        (value,) = _fixed(name, 1)(raw, current, variables)
        if _nullish(value):
            return None
        try:
            return convert(value)
        except (TypeError, ValueError, ArithmeticError):
            raise CommandError(
                241, f"Unsupported conversion from {type_name(value)} in {name}"
            ) from None

    return op


def _to_number(kind: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            value = date_ms(value)
        elif isinstance(value, str):
            value = float(value) if kind == "double" else int(value)
        else:
            value = number(value)
        if kind == "double":
            return float(value)
        whole = int(value)
        return Int64(whole) if kind == "long" else whole

    return convert


def _with_vars(variables: Variables, **extra: Any) -> dict[str, Any]:
    return {**variables, **extra}


def _let(raw: Any, current: Any, variables: Variables) -> Any:
    defined = {name: evaluate(expr, current, variables) for name, expr in raw["vars"].items()}
    return evaluate(raw["in"], current, _with_vars(variables, **defined))


def _map(raw: Any, current: Any, variables: Variables) -> Any:
    source = evaluate(raw["input"], current, variables)
    if _nullish(source):
        return None
    name = raw.get("as", "this")
    return [
        _or_null(evaluate(raw["in"], current, _with_vars(variables, **{name: item})))
        for item in _array_arg("$map", source)
    ]


def _filter(raw: Any, current: Any, variables: Variables) -> Any:
    source = evaluate(raw["input"], current, variables)
    if _nullish(source):
        return None
    name = raw.get("as", "this")
    kept = [
        item
        for item in _array_arg("$filter", source)
        if truthy(evaluate(raw["cond"], current, _with_vars(variables, **{name: item})))
    ]
    limit = evaluate(raw["limit"], current, variables) if "limit" in raw else None
    return kept if _nullish(limit) else kept[: int(number(limit))]


def _reduce(raw: Any, current: Any, variables: Variables) -> Any:
    source = evaluate(raw["input"], current, variables)
    if _nullish(source):
        return None
    value = evaluate(raw["initialValue"], current, variables)
    for item in _array_arg("$reduce", source):
        value = evaluate(raw["in"], current, _with_vars(variables, value=value, this=item))
    return value


def _string_case(upper: bool) -> _Op:
    def op(raw: Any, current: Any, variables: Variables) -> Any:
        (value,) = _fixed("$toUpper" if upper else "$toLower", 1)(raw, current, variables)
        text = "" if _nullish(value) else to_string(value)
        return text.upper() if upper else text.lower()

    return op


_OPERATORS: Final[dict[str, _Op]] = {
    "$eq": _comparison("$eq", lambda order: order == 0),
    "$ne": _comparison("$ne", lambda order: order != 0),
    "$gt": _comparison("$gt", lambda order: order > 0),
    "$gte": _comparison("$gte", lambda order: order >= 0),
    "$lt": _comparison("$lt", lambda order: order < 0),
    "$lte": _comparison("$lte", lambda order: order <= 0),
    "$cmp": _cmp,
    "$and": _and,
    "$or": _or,
    "$not": _not,
    "$cond": _cond,
    "$ifNull": _if_null,
    "$switch": _switch,
    "$add": _add,
    "$subtract": _subtract,
    "$multiply": _multiply,
    "$divide": _divide,
    "$mod": _mod,
    "$abs": _unary_math("$abs", abs),
    "$floor": _unary_math("$floor", math.floor),
    "$ceil": _unary_math("$ceil", math.ceil),
    "$max": _extreme(1),
    "$min": _extreme(-1),
    "$sum": _sum,
    "$avg": _avg,
    "$dateAdd": _date_shift("$dateAdd", 1),
    "$dateSubtract": _date_shift("$dateSubtract", -1),
    "$toDate": _converter("$toDate", to_date),
    "$toString": _converter("$toString", to_string),
    "$toInt": _converter("$toInt", _to_number("int")),
    "$toLong": _converter("$toLong", _to_number("long")),
    "$toDouble": _converter("$toDouble", _to_number("double")),
    "$toBool": _converter("$toBool", truthy),
    "$toObjectId": _converter("$toObjectId", lambda value: ObjectId(value)),
    "$literal": _literal,
    "$concatArrays": _concat_arrays,
    "$slice": _slice,
    "$size": _size,
    "$in": _in,
    "$arrayElemAt": _array_elem_at,
    "$first": _end(0),
    "$last": _end(-1),
    "$mergeObjects": _merge_objects,
    "$concat": _concat,
    "$toUpper": _string_case(True),
    "$toLower": _string_case(False),
    "$type": _type,
    "$isArray": _is_array,
    "$let": _let,
    "$map": _map,
    "$filter": _filter,
    "$reduce": _reduce,
}
