"""Query filters, compiled once per command into a predicate over stored documents.

Matching follows MongoDB's array rules: a condition on a path that reaches an array holds
when it holds for the array itself or for one of its elements, except for the operators that
look at the array as a whole (``$size``, ``$elemMatch``, ``$all``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from bson import Int64, ObjectId

from tests.mongo_standin.errors import CommandError, bad_value
from tests.mongo_standin.expressions import Variables, evaluate
from tests.mongo_standin.values import (
    MISSING,
    RANK_NULL,
    TYPE_ALIASES,
    as_regex,
    compare,
    equal,
    flatten,
    hkey,
    is_number,
    is_regex,
    number,
    query_leaves,
    truthy,
    type_name,
    type_rank,
)

Predicate = Callable[[dict[str, Any]], bool]
_LeafTest = Callable[[list[Any]], bool]


def compile_filter(spec: Mapping[str, Any] | None, variables: Variables) -> Predicate:
    """A predicate for a query filter; ``None`` or ``{}`` matches every document."""
    if not spec:
        return _always
    if not isinstance(spec, Mapping):
        raise bad_value("filter must be an object")
    tests: list[Predicate] = []
    for key, condition in spec.items():
        if key.startswith("$"):
            tests.append(_compile_top(key, condition, variables))
        else:
            tests.append(_compile_field(key, condition, variables))
    if len(tests) == 1:
        return tests[0]
    return _every(tests)


def _every(tests: list[Predicate]) -> Predicate:
    def test(doc: dict[str, Any]) -> bool:
        for one in tests:  # noqa: SIM110 (a plain loop: no generator made per document)
            if not one(doc):
                return False
        return True

    return test


def _always(doc: dict[str, Any]) -> bool:
    return True


def _compile_top(key: str, condition: Any, variables: Variables) -> Predicate:
    if key in ("$and", "$or", "$nor"):
        if type(condition) is not list or not condition:
            raise bad_value(f"{key} argument must be a non-empty array")
        parts = [compile_filter(clause, variables) for clause in condition]
        if key == "$and":
            return lambda doc: all(part(doc) for part in parts)
        if key == "$or":
            return lambda doc: any(part(doc) for part in parts)
        return lambda doc: not any(part(doc) for part in parts)
    if key == "$expr":
        return lambda doc: truthy(evaluate(condition, doc, {**variables, "ROOT": doc}))
    if key == "$comment":
        return _always
    if key in ("$text", "$where", "$jsonSchema", "$sampleRate"):
        raise CommandError(115, f"the MongoDB stand-in does not implement {key}")
    raise bad_value(f"unknown top level operator: {key}")


def _compile_field(path: str, condition: Any, variables: Variables) -> Predicate:
    parts = path.split(".")
    if len(parts) == 1 and type(condition) in _PLAIN_EQUALITIES:
        return _field_equals(path, condition)
    if (
        len(parts) == 1
        and type(condition) is dict
        and len(condition) == 1
        and "$exists" in condition
    ):
        # ``{name: {$exists: ...}}`` on a top-level field (a partial index's filter).
        wanted = truthy(condition["$exists"])
        return lambda doc: (doc.get(path, MISSING) is not MISSING) == wanted
    test = compile_condition(condition, variables)
    if len(parts) == 1:
        name = parts[0]
        return lambda doc: test([doc.get(name, MISSING)])
    return lambda doc: test(query_leaves(doc, parts))


# Values whose equality test is the plain one (no null, regex, document or array rules).
_PLAIN_EQUALITIES: Final = (str, int, ObjectId)


def _field_equals(name: str, value: Any) -> Predicate:
    """``{name: value}`` on a top-level field: ``_equals`` for the one leaf a top-level
    field has, without building the list of leaves for each document."""
    kind = type(value)

    def test(doc: dict[str, Any]) -> bool:
        leaf = doc.get(name, MISSING)
        if type(leaf) is kind:
            return bool(leaf == value)
        if type(leaf) is list:
            return any(equal(item, value) for item in leaf)
        return leaf is not MISSING and equal(leaf, value)

    return test


def is_operator_doc(condition: Any) -> bool:
    return type(condition) is dict and bool(condition) and next(iter(condition)).startswith("$")


def compile_condition(condition: Any, variables: Variables) -> _LeafTest:
    """A test over the leaves a path reaches: an equality, or a document of operators."""
    if not is_operator_doc(condition):
        return _equals(condition)
    tests: list[_LeafTest] = []
    for operator, argument in condition.items():
        if operator == "$options":
            if "$regex" not in condition:
                raise bad_value("$options needs a $regex")
            continue
        if not operator.startswith("$"):
            raise bad_value(f"unknown operator: {operator}")
        tests.append(_operator(operator, argument, condition, variables))
    if len(tests) == 1:
        return tests[0]
    return lambda leaves: all(test(leaves) for test in tests)


def _equals(value: Any) -> _LeafTest:
    if is_regex(value):
        return _regex(as_regex(value))
    if value is None:
        return _equals_null
    if type(value) in _PLAIN_EQUALITIES:
        kind = type(value)

        def fast(leaves: list[Any]) -> bool:
            for leaf in leaves:
                if type(leaf) is kind and leaf == value:
                    return True
                if type(leaf) is list and any(equal(item, value) for item in leaf):
                    return True
                if type(leaf) is not kind and leaf is not MISSING and equal(leaf, value):
                    return True
            return False

        return fast
    return lambda leaves: any(equal(candidate, value) for candidate in flatten(leaves))


def _equals_null(leaves: list[Any]) -> bool:
    for leaf in leaves:
        if leaf is MISSING or leaf is None:
            return True
        if type(leaf) is list and any(item is None for item in leaf):
            return True
    return False


def _regex(pattern: Any) -> _LeafTest:
    def test(leaves: list[Any]) -> bool:
        for candidate in flatten(leaves):
            if isinstance(candidate, str) and pattern.search(candidate):
                return True
            if is_regex(candidate) and as_regex(candidate).pattern == pattern.pattern:
                return True
        return False

    return test


def _ordering(value: Any, accept: Callable[[int], bool]) -> _LeafTest:
    """$gt and friends: only values of the same type bracket compare (no 5 > "a")."""
    rank = type_rank(value)
    if rank == RANK_NULL:
        return _equals_null if accept(0) else (lambda leaves: False)

    def test(leaves: list[Any]) -> bool:
        for candidate in flatten(leaves):
            if type_rank(candidate) == rank and accept(compare(candidate, value)):
                return True
        return False

    return test


def _in(values: Any) -> _LeafTest:
    if type(values) is not list:
        raise bad_value("$in needs an array")
    special = [_equals(value) for value in values if is_regex(value) or value is None]
    keys = {hkey(value) for value in values if not (is_regex(value) or value is None)}

    def test(leaves: list[Any]) -> bool:
        if any(hkey(candidate) in keys for candidate in flatten(leaves)):
            return True
        return any(check(leaves) for check in special)

    return test


def _type_test(argument: Any) -> _LeafTest:
    wanted = argument if type(argument) is list else [argument]
    names = set()
    for item in wanted:
        name = TYPE_ALIASES.get(item)
        if name is None:
            raise bad_value(f"Unknown type name alias: {item}")
        names.add(name)

    def test(leaves: list[Any]) -> bool:
        for candidate in flatten(leaves):
            kind = type_name(candidate)
            if kind in names or ("number" in names and is_number(candidate)):
                return True
        return False

    return test


def _elem_match(spec: Any, variables: Variables) -> _LeafTest:
    if type(spec) is not dict:
        raise bad_value("$elemMatch needs an Object")
    first = next(iter(spec), "")
    if first.startswith("$") and first not in ("$and", "$or", "$nor", "$expr"):
        value_test = compile_condition(spec, variables)
        return lambda leaves: any(
            value_test([item]) for leaf in leaves if type(leaf) is list for item in leaf
        )
    doc_test = compile_filter(spec, variables)
    return lambda leaves: any(
        type(item) is dict and doc_test(item)
        for leaf in leaves
        if type(leaf) is list
        for item in leaf
    )


def _all(values: Any, variables: Variables) -> _LeafTest:
    if type(values) is not list:
        raise bad_value("$all needs an array")
    if not values:
        return lambda leaves: False
    tests = [
        _elem_match(value["$elemMatch"], variables) if is_operator_doc(value) else _equals(value)
        for value in values
    ]
    return lambda leaves: all(test(leaves) for test in tests)


def _mod(argument: Any) -> _LeafTest:
    if type(argument) is not list or len(argument) != 2 or not all(map(is_number, argument)):
        raise bad_value("malformed mod, needs to be an array of two numbers")
    divisor, remainder = int(number(argument[0])), int(number(argument[1]))
    if divisor == 0:
        raise bad_value("divisor cannot be 0")

    def test(leaves: list[Any]) -> bool:
        return any(
            is_number(item)
            and math.isfinite(number(item))
            and math.fmod(int(number(item)), divisor) == remainder
            for item in flatten(leaves)
        )

    return test


def _operator(
    operator: str, argument: Any, condition: dict[str, Any], variables: Variables
) -> _LeafTest:
    """One query operator as a test over the leaves a path reached."""
    if operator == "$eq":
        return _equals(argument)
    if operator == "$ne":
        inner = _equals(argument)
        return lambda leaves: not inner(leaves)
    if operator in _ORDERINGS:
        return _ordering(argument, _ORDERINGS[operator])
    if operator == "$in":
        return _in(argument)
    if operator == "$nin":
        inner = _in(argument)
        return lambda leaves: not inner(leaves)
    if operator == "$exists":
        wanted = truthy(argument)
        return lambda leaves: any(leaf is not MISSING for leaf in leaves) == wanted
    if operator == "$type":
        return _type_test(argument)
    if operator == "$regex":
        return _regex(as_regex(argument, str(condition.get("$options", ""))))
    if operator == "$not":
        if is_regex(argument):
            inner = _regex(as_regex(argument))
        elif is_operator_doc(argument):
            inner = compile_condition(argument, variables)
        else:
            raise bad_value("$not needs a regex or a document")
        return lambda leaves: not inner(leaves)
    if operator == "$elemMatch":
        return _elem_match(argument, variables)
    if operator == "$size":
        if not is_number(argument) or number(argument) != int(number(argument)):
            raise bad_value("$size needs a number")
        size = int(number(argument))
        return lambda leaves: any(type(leaf) is list and len(leaf) == size for leaf in leaves)
    if operator == "$all":
        return _all(argument, variables)
    if operator == "$mod":
        return _mod(argument)
    if operator == "$comment":
        return lambda leaves: True
    raise bad_value(f"unknown operator: {operator}")


_ORDERINGS: Final[dict[str, Callable[[int], bool]]] = {
    "$gt": lambda order: order > 0,
    "$gte": lambda order: order >= 0,
    "$lt": lambda order: order < 0,
    "$lte": lambda order: order <= 0,
}


def equality_fields(spec: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """The values each field must equal for a document to match: what an index can look up.

    Collected from top-level equalities, ``$eq``, short ``$in`` lists and the clauses of a
    top-level ``$and``. Null and regular expressions are left out: their matches are not
    found by hashing the value.
    """
    found: dict[str, list[Any]] = {}
    if not spec:
        return found
    for key, condition in spec.items():
        if key == "$and" and type(condition) is list:
            for clause in condition:
                if isinstance(clause, Mapping):
                    for field, options in equality_fields(clause).items():
                        found.setdefault(field, options)
            continue
        if key.startswith("$"):
            continue
        # A plain value is its own one option (the common case, made short).
        values = [condition] if type(condition) in _PLAIN_VALUES else _indexable_values(condition)
        if values is not None:
            previous = found.get(key)
            if previous is None or len(values) < len(previous):
                found[key] = values
    return found


_MAX_IN_LOOKUPS: Final = 64
# Values that are neither documents, null nor regular expressions: an index looks them up.
_PLAIN_VALUES: Final = frozenset({str, int, float, bool, Int64, ObjectId, datetime})


def _indexable_values(condition: Any) -> list[Any] | None:
    if is_operator_doc(condition):
        if "$eq" in condition:
            return _indexable_values(condition["$eq"])
        values = condition.get("$in")
        short = type(values) is list and 0 < len(values) <= _MAX_IN_LOOKUPS
        if short and all(_indexable_values(value) is not None for value in values):
            return list(values)
        return None
    if condition is None or is_regex(condition):
        return None
    return [condition]


def filter_roots(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """The top-level fields a filter reads (``a`` for ``a.b``); None when it may read any
    (``$expr`` and the other top-level operators but ``$and``, ``$or`` and ``$nor``)."""
    roots: set[str] = set()
    for key, condition in spec.items():
        if key in ("$and", "$or", "$nor") and type(condition) is list:
            for clause in condition:
                inner = filter_roots(clause) if isinstance(clause, Mapping) else None
                if inner is None:
                    return None
                roots |= inner
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            return None
        else:
            roots.add(key.split(".", 1)[0])
    return frozenset(roots)
