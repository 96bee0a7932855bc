"""Update documents (``$set``, ``$push``, ...), replacements, pipeline updates and upserts.

Every update works on a copy and returns the new document: the stored one is swapped only
after the unique indexes accept it, so a refused write leaves nothing half-applied.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Final

from bson import ObjectId, Timestamp

from tests.mongo_standin.errors import CommandError, bad_value
from tests.mongo_standin.expressions import Variables, arithmetic
from tests.mongo_standin.matching import compile_condition, compile_filter, is_operator_doc
from tests.mongo_standin.pipeline import Descending, run_pipeline, sort_documents
from tests.mongo_standin.values import (
    MISSING,
    clone,
    compare,
    equal,
    is_number,
    number,
    shell_repr,
    sort_key,
    type_name,
)

Doc = dict[str, Any]


def is_pipeline(update: Any) -> bool:
    return type(update) is list


def is_replacement(update: Any) -> bool:
    return type(update) is dict and not any(key.startswith("$") for key in update)


def apply_update(doc: Doc, update: Any, variables: Variables, *, inserting: bool = False) -> Doc:
    """The document after ``update``; ``inserting`` for the document an upsert creates."""
    if is_pipeline(update):
        results = list(run_pipeline([doc], update, {**variables, "ROOT": doc}, update=True))
        new = results[0]
    elif type(update) is not dict:
        raise CommandError(14, "Update argument must be either an object or an array")
    elif is_replacement(update):
        new = dict(update)
    else:
        new = _copy_touched(doc, update)
        _apply_operators(new, update, variables, inserting=inserting)
    return _keep_id(doc, new, inserting=inserting)


def _copy_touched(doc: Doc, update: Doc) -> Doc:
    """A copy of ``doc`` that the operators of ``update`` may change in place: the documents
    and arrays along their paths, and the value at the end of each, are copied (shallowly);
    everything else is the stored objects themselves, so the fields an update leaves alone
    stay the same objects (see ``storage.changed_roots``)."""
    copy = dict(doc)
    for operator, fields in update.items():
        if type(fields) is not dict:
            continue  # refused by _apply_operators
        for path, argument in fields.items():
            if "." in path:
                _copy_path(copy, path.split("."))
            else:  # a top-level field: ``_copy_path`` made short
                child = copy.get(path)
                if type(child) is dict:
                    copy[path] = dict(child)
                elif type(child) is list:
                    copy[path] = list(child)
            if operator == "$rename" and isinstance(argument, str):
                _copy_path(copy, argument.split("."))
    return copy


def _copy_path(doc: Doc, parts: list[str]) -> None:
    """Replace each document or array on the path (as ``_locate`` walks it) by a copy."""
    container: Any = doc
    for part in parts:
        if type(container) is dict:
            key: Any = part
        elif type(container) is list and part.isdigit() and int(part) < len(container):
            key = int(part)
        else:
            return
        child = container[key] if type(container) is list else container.get(key, MISSING)
        if type(child) is dict:
            child = dict(child)
        elif type(child) is list:
            child = list(child)
        else:
            return
        container[key] = child
        container = child


def _keep_id(old: Doc, new: Doc, *, inserting: bool) -> Doc:
    """``_id`` stays first and unchanged, as the server enforces."""
    if "_id" not in old:
        return new
    if "_id" not in new:
        return {"_id": old["_id"], **new}
    if not inserting and not equal(old["_id"], new["_id"]):
        raise CommandError(
            66,
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        )
    if next(iter(new)) != "_id":
        return {"_id": new["_id"], **{key: value for key, value in new.items() if key != "_id"}}
    return new


def upsert_seed(query: Mapping[str, Any] | None) -> Doc:
    """The document an upsert starts from: the filter's equality conditions."""
    seed: Doc = {}
    for key, condition in (query or {}).items():
        if key == "$and" and type(condition) is list:
            for clause in condition:
                for path, value in upsert_seed(clause).items():
                    seed[path] = value
        elif key.startswith("$"):
            continue
        elif not is_operator_doc(condition):
            _assign(seed, key.split("."), clone(condition))
        elif "$eq" in condition:
            _assign(seed, key.split("."), clone(condition["$eq"]))
    return seed


def new_id() -> ObjectId:
    return ObjectId()


# ---------------------------------------------------------------------------------------------
# Operators


def _apply_operators(doc: Doc, update: Doc, variables: Variables, *, inserting: bool) -> None:
    """Check every operator and path first (nothing is applied when one is refused), then
    apply them in order."""
    paths: list[list[str]] = []
    steps: list[tuple[_Apply, list[str], Any]] = []
    for operator, fields in update.items():
        if operator not in _OPERATORS:
            raise CommandError(
                9,
                f"Unknown modifier: {operator}. Expected a valid update modifier or "
                "pipeline-style update specified as an array",
            )
        if type(fields) is not dict:
            raise CommandError(
                9, f"Modifiers operate on fields but we found type {type_name(fields)} instead."
            )
        applied = operator != "$setOnInsert" or inserting
        for path, argument in fields.items():
            parts = path.split(".")
            if "$" in path and any(p in ("$", "$[]") or p.startswith("$[") for p in parts):
                raise bad_value(f"the stand-in does not support positional updates ({path})")
            paths.append(parts)
            if operator == "$rename":
                if not isinstance(argument, str):
                    raise bad_value("The 'to' field for $rename must be a string")
                paths.append(argument.split("."))
            if applied:
                steps.append((_OPERATORS[operator], parts, argument))
    _check_conflicts(paths)
    for apply, parts, argument in steps:
        apply(doc, parts, argument, variables)


def _check_conflicts(paths: list[list[str]]) -> None:
    # Top-level fields conflict only when one is named twice (the common case, made short).
    if all(len(parts) == 1 for parts in paths) and len({parts[0] for parts in paths}) == len(paths):
        return
    ordered = sorted(paths)
    for first, second in itertools.pairwise(ordered):
        if second[: len(first)] == first:
            joined, other = ".".join(second), ".".join(first)
            raise CommandError(
                40, f"Updating the path '{joined}' would create a conflict at '{other}'"
            )


def _assign(doc: Doc, parts: list[str], value: Any) -> None:
    """Set the value at a path, creating documents along it; arrays take numeric parts and
    are padded with nulls, as on a server."""
    container: Any = doc
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if type(container) is dict:
            if last:
                container[part] = value
                return
            child = container.get(part, MISSING)
            if child is MISSING:
                child = container[part] = {}
        elif type(container) is list and part.isdigit():
            position = int(part)
            if position >= len(container):
                container.extend([None] * (position + 1 - len(container)))
            if last:
                container[position] = value
                return
            child = container[position]
            if child is None:
                child = container[position] = {}
        else:
            raise _not_viable(part, parts[index - 1], container)
        if type(child) not in (dict, list):
            raise _not_viable(parts[index + 1], part, child)
        container = child


def _not_viable(field: str, parent: str, value: Any) -> CommandError:
    return CommandError(
        28, f"Cannot create field '{field}' in element {{{parent}: {shell_repr(value)}}}"
    )


def _locate(doc: Doc, parts: list[str]) -> tuple[Any, Any]:
    """The container of the path's last part and the value there (MISSING when absent)."""
    container: Any = doc
    for part in parts[:-1]:
        if type(container) is dict:
            container = container.get(part, MISSING)
        elif type(container) is list and part.isdigit() and int(part) < len(container):
            container = container[int(part)]
        else:
            return None, MISSING
    last = parts[-1]
    if type(container) is dict:
        return container, container.get(last, MISSING)
    if type(container) is list and last.isdigit() and int(last) < len(container):
        return container, container[int(last)]
    return None, MISSING


def _set(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    if len(parts) == 1:  # a top-level field of the document: ``_assign`` made short
        doc[parts[0]] = clone(argument)
    else:
        _assign(doc, parts, clone(argument))


def _unset(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    container, value = _locate(doc, parts)
    if value is MISSING:
        return
    if type(container) is dict:
        del container[parts[-1]]
    else:
        container[int(parts[-1])] = None  # the server keeps array positions


def _numeric(operator: str, doc: Doc, parts: list[str], argument: Any, value: Any) -> None:
    if not is_number(argument):
        verb = "increment" if operator == "$inc" else "multiply"
        raise CommandError(
            14,
            f"Cannot {verb} with non-numeric argument: {{{parts[-1]}: {shell_repr(argument)}}}",
        )
    if value is not MISSING and not is_number(value):
        raise CommandError(
            14,
            f"Cannot apply {operator} to a value of non-numeric type. {{_id: "
            f"{shell_repr(doc.get('_id'))}}} has the field '{parts[-1]}' of non-numeric type "
            f"{type_name(value)}",
        )


def _inc(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    _, value = _locate(doc, parts)
    _numeric("$inc", doc, parts, argument, value)
    result = argument if value is MISSING else arithmetic(value, argument, lambda x, y: x + y)
    _assign(doc, parts, result)


def _mul(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    _, value = _locate(doc, parts)
    _numeric("$mul", doc, parts, argument, value)
    current = arithmetic(argument, 0, lambda x, y: y) if value is MISSING else value
    _assign(doc, parts, arithmetic(current, argument, lambda x, y: x * y))


def _extreme(wanted: int) -> Callable[[Doc, list[str], Any, Variables], None]:
    def apply(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
        _, value = _locate(doc, parts)
        if value is MISSING or compare(argument, value) == wanted:
            _assign(doc, parts, clone(argument))

    return apply


def _current_date(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    now: dt.datetime = variables["NOW"]
    if type(argument) is dict and argument.get("$type") == "timestamp":
        _assign(doc, parts, Timestamp(int(now.timestamp()), 1))
    elif argument is True or (type(argument) is dict and argument.get("$type") == "date"):
        _assign(doc, parts, now)
    else:
        raise bad_value("$currentDate takes true or {$type: 'date' | 'timestamp'}")


def _array_at(doc: Doc, parts: list[str]) -> list[Any] | None:
    _, value = _locate(doc, parts)
    if value is MISSING:
        return None
    if type(value) is not list:
        raise CommandError(
            2,
            f"The field '{'.'.join(parts)}' must be an array but is of type {type_name(value)} "
            f"in document {{_id: {shell_repr(doc.get('_id'))}}}",
        )
    return value


def _push(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    array = _array_at(doc, parts)
    if array is None:
        array = []
        _assign(doc, parts, array)
    modifiers = type(argument) is dict and "$each" in argument
    items = clone(argument["$each"] if modifiers else [argument])
    if modifiers and type(items) is not list:
        raise bad_value("The argument to $each in $push must be an array")
    position = argument.get("$position") if modifiers else None
    if position is None:
        array.extend(items)
    else:
        start = int(number(position))
        start = max(len(array) + start, 0) if start < 0 else start
        array[start:start] = items
    if modifiers and "$sort" in argument:
        order = argument["$sort"]
        if type(order) is dict:
            array[:] = sort_documents(array, order)
        else:
            array.sort(key=_element_sort(order))
    if modifiers and "$slice" in argument:
        count = int(number(argument["$slice"]))
        array[:] = array[count:] if count < 0 else array[:count]


def _element_sort(order: Any) -> Callable[[Any], Any]:
    if number(order) < 0:
        return lambda item: Descending(sort_key(item))
    return sort_key


def _add_to_set(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    array = _array_at(doc, parts)
    if array is None:
        array = []
        _assign(doc, parts, array)
    items = argument["$each"] if type(argument) is dict and "$each" in argument else [argument]
    for item in items:
        if not any(equal(existing, item) for existing in array):
            array.append(clone(item))


def _pop(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    array = _array_at(doc, parts)
    if array:
        array.pop(0 if number(argument) < 0 else -1)


def _pull(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    array = _array_at(doc, parts)
    if not array:
        return
    if is_operator_doc(argument):
        test = compile_condition(argument, variables)
        array[:] = [item for item in array if not test([item])]
    elif type(argument) is dict:
        match = compile_filter(argument, variables)
        array[:] = [item for item in array if not (type(item) is dict and match(item))]
    else:
        array[:] = [item for item in array if not equal(item, argument)]


def _pull_all(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    array = _array_at(doc, parts)
    if array:
        array[:] = [item for item in array if not any(equal(item, gone) for gone in argument)]


def _rename(doc: Doc, parts: list[str], argument: Any, variables: Variables) -> None:
    container, value = _locate(doc, parts)
    if value is MISSING:
        return
    if type(container) is not dict:
        raise bad_value("$rename source may not be dynamic array")
    del container[parts[-1]]
    _assign(doc, argument.split("."), value)


_Apply = Callable[[Doc, list[str], Any, Variables], None]
_OPERATORS: Final[dict[str, _Apply]] = {
    "$set": _set,
    "$setOnInsert": _set,
    "$unset": _unset,
    "$inc": _inc,
    "$mul": _mul,
    "$min": _extreme(-1),
    "$max": _extreme(1),
    "$currentDate": _current_date,
    "$push": _push,
    "$addToSet": _add_to_set,
    "$pop": _pop,
    "$pull": _pull,
    "$pullAll": _pull_all,
    "$rename": _rename,
}
