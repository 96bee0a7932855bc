"""Projections, sorts and aggregation stages, shared by find, aggregate and pipeline updates.

Stages never change a document in place: stored documents are shared with open cursors and
earlier results, so every stage builds new documents (copying only what it changes).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from tests.mongo_standin.errors import CommandError, bad_value
from tests.mongo_standin.expressions import Variables, arithmetic, evaluate
from tests.mongo_standin.matching import compile_filter
from tests.mongo_standin.values import (
    MISSING,
    compare,
    get_path,
    hkey,
    is_number,
    number,
    query_leaves,
    set_path_copy,
    sort_key,
    truthy,
)

Doc = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Projection


class Projection:
    """A find projection or a ``$project`` stage: inclusion, exclusion or computed fields."""

    def __init__(self, spec: Mapping[str, Any], variables: Variables, *, find: bool) -> None:
        self.variables = variables
        self.flags: dict[tuple[str, ...], bool] = {}
        self.computed: list[tuple[list[str], Any]] = []
        self.slices: list[tuple[list[str], Any]] = []
        self.elem_matches: list[tuple[str, Callable[[Doc], bool]]] = []
        self._parse((), spec, find=find)
        id_flag = self.flags.pop(("_id",), None)
        self.include_id = id_flag is not False
        included = [path for path, flag in self.flags.items() if flag]
        excluded = [path for path, flag in self.flags.items() if not flag]
        only_id = id_flag is True and not excluded
        self.inclusion = bool(included or self.computed or self.elem_matches or only_id)
        if self.inclusion and excluded:
            raise CommandError(
                31254,
                f"Cannot do exclusion on field {'.'.join(excluded[0])} in inclusion projection",
            )
        if not find and not self.flags and not self.computed and id_flag is None:
            raise CommandError(
                51272,
                "Invalid $project :: caused by :: projection specification must have at "
                "least one field",
            )
        paths = included + [tuple(parts) for parts, _ in self.slices] if self.inclusion else []
        paths += [(name,) for name, _ in self.elem_matches]
        if self.inclusion and self.include_id:
            paths.append(("_id",))
        if not self.inclusion and id_flag is False:
            excluded.append(("_id",))
        self.tree = _tree(paths if self.inclusion else excluded)

    def _parse(self, prefix: tuple[str, ...], spec: Mapping[str, Any], *, find: bool) -> None:
        for key, value in spec.items():
            path = (*prefix, *key.split("."))
            if isinstance(value, bool) or is_number(value):
                self.flags[path] = truthy(value)
            elif type(value) is dict and value and next(iter(value)).startswith("$"):
                operator = next(iter(value))
                if find and operator == "$slice":
                    self.slices.append((list(path), value["$slice"]))
                elif find and operator == "$elemMatch":
                    if len(path) != 1:
                        raise bad_value("Cannot use $elemMatch projection on a nested field.")
                    match = compile_filter(value["$elemMatch"], self.variables)
                    self.elem_matches.append((path[0], match))
                else:
                    self.computed.append((list(path), value))
            elif type(value) is dict:
                if not value:
                    raise bad_value(f"An empty sub-projection is not a valid value: {key}")
                self._parse(path, value, find=find)
            else:
                self.computed.append((list(path), value))

    def __call__(self, doc: Doc) -> Doc:
        out = _include(doc, self.tree) if self.inclusion else _exclude(doc, self.tree)
        if self.computed:
            variables = {**self.variables, "ROOT": doc}
            for parts, expr in self.computed:
                out = set_path_copy(out, parts, evaluate(expr, doc, variables))
        for parts, argument in self.slices:
            value = get_path(out, parts)
            if type(value) is list and len(parts) == 1:
                out[parts[0]] = _slice_array(value, argument)  # ``out`` is this call's own
            elif type(value) is list:
                out = set_path_copy(out, parts, _slice_array(value, argument))
        for name, match in self.elem_matches:
            value = doc.get(name)
            found = (
                [item for item in value if type(item) is dict and match(item)][:1]
                if (type(value) is list)
                else []
            )
            out = set_path_copy(out, [name], found[0:1] if found else MISSING)
        return out


def _slice_array(value: list[Any], argument: Any) -> list[Any]:
    if type(argument) is list:
        skip, limit = int(number(argument[0])), int(number(argument[1]))
        start = max(len(value) + skip, 0) if skip < 0 else skip
        return value[start : start + limit]
    count = int(number(argument))
    return value[count:] if count < 0 else value[:count]


def _tree(paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if child is True:
                break
            node = node.setdefault(part, {})
        else:
            node[path[-1]] = True
    return tree


def _include(doc: Doc, tree: dict[str, Any]) -> Doc:
    out: Doc = {}
    for key, value in doc.items():
        node = tree.get(key)
        if node is None:
            continue
        if node is True:
            out[key] = value
        elif type(value) is dict:
            out[key] = _include(value, node)
        elif type(value) is list:
            out[key] = [_include(item, node) for item in value if type(item) is dict]
    return out


def _exclude(doc: Doc, tree: dict[str, Any]) -> Doc:
    out: Doc = {}
    for key, value in doc.items():
        node = tree.get(key)
        if node is True:
            continue
        if node is None:
            out[key] = value
        elif type(value) is dict:
            out[key] = _exclude(value, node)
        elif type(value) is list:
            out[key] = [_exclude(item, node) if type(item) is dict else item for item in value]
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Sort


class Descending:
    """Inverts a sort key so that one stable sort handles mixed directions."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key

    def __lt__(self, other: Descending) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and self.key == other.key

    __hash__ = None  # type: ignore[assignment]


def compile_sort(spec: Mapping[str, Any]) -> Callable[[Doc], tuple[Any, ...]]:
    """A key function for a sort specification (arrays sort by their least element ascending
    and their greatest descending, missing as null)."""
    if not isinstance(spec, Mapping) or not spec:
        raise CommandError(15976, "$sort stage must have at least one sort key")
    fields: list[tuple[list[str], bool]] = []
    for path, direction in spec.items():
        if type(direction) is dict:
            raise CommandError(17312, f"the stand-in does not support $meta sorts ({path})")
        if not is_number(direction) or number(direction) not in (1, -1):
            raise CommandError(
                15975, "$sort key ordering must be 1 (for ascending) or -1 (for descending)"
            )
        fields.append((path.split("."), number(direction) < 0))

    def key(doc: Doc) -> tuple[Any, ...]:
        return tuple(_field_key(doc, parts, descending) for parts, descending in fields)

    return key


def _field_key(doc: Doc, parts: list[str], descending: bool) -> Any:
    leaves = query_leaves(doc, parts)
    candidates: list[Any] = []
    for leaf in leaves:
        if type(leaf) is list:
            candidates.extend(leaf if leaf else [None])
        else:
            candidates.append(None if leaf is MISSING else leaf)
    keys = [sort_key(candidate) for candidate in candidates]
    if descending:
        return Descending(max(keys))
    return min(keys)


def sort_documents(docs: Iterable[Doc], spec: Mapping[str, Any], limit: int = 0) -> list[Doc]:
    """Documents in sort order (stable); only the first ``limit`` when it is positive."""
    if len(spec) == 1 and "$natural" in spec:
        ordered = list(docs)
        if number(spec["$natural"]) < 0:
            ordered.reverse()
        return ordered[:limit] if limit > 0 else ordered
    key = compile_sort(spec)
    if limit > 0:
        return heapq.nsmallest(limit, docs, key=key)
    return sorted(docs, key=key)


# ---------------------------------------------------------------------------------------------
# Stages

UPDATE_STAGES: Final = frozenset(
    {"$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith"}
)


_NOT_IMPLEMENTED: Final = frozenset(
    {
        "$bucket",
        "$bucketAuto",
        "$collStats",
        "$currentOp",
        "$densify",
        "$documents",
        "$facet",
        "$fill",
        "$geoNear",
        "$graphLookup",
        "$indexStats",
        "$lookup",
        "$merge",
        "$out",
        "$redact",
        "$sample",
        "$search",
        "$setWindowFields",
        "$sortByCount",
        "$unionWith",
    }
)


def run_pipeline(
    docs: Iterable[Doc], stages: list[Any], variables: Variables, *, update: bool = False
) -> Iterator[Doc]:
    """The documents a pipeline outputs; ``update`` allows only the stages an update may use."""
    if type(stages) is not list:
        raise CommandError(14, "'pipeline' option must be specified as an array")
    stream: Iterable[Doc] = docs
    index = 0
    while index < len(stages):
        stage = stages[index]
        if type(stage) is not dict or len(stage) != 1:
            raise CommandError(
                40323, "A pipeline stage specification object must contain exactly one field."
            )
        name, spec = next(iter(stage.items()))
        if update and name not in UPDATE_STAGES:
            raise CommandError(72, f"{name} is not allowed to be used within an update")
        if name == "$sort":
            limit = 0
            following = stages[index + 1] if index + 1 < len(stages) else None
            if type(following) is dict and "$limit" in following:
                limit = _positive(following["$limit"], "$limit")
                index += 1
            stream = sort_documents(stream, spec, limit)
        else:
            stage_fn = _STAGES.get(name)
            if stage_fn is None and name in _NOT_IMPLEMENTED:
                raise CommandError(115, f"the MongoDB stand-in does not implement {name}")
            if stage_fn is None:
                raise CommandError(40324, f"Unrecognized pipeline stage name: '{name}'")
            stream = stage_fn(stream, spec, variables)
        index += 1
    return iter(stream)


def _positive(value: Any, name: str) -> int:
    if not is_number(value) or number(value) != int(number(value)) or number(value) < 0:
        raise CommandError(15958, f"the {name} must be a non-negative integer")
    return int(number(value))


def _match(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    test = compile_filter(spec, variables)
    return (doc for doc in docs if test(doc))


def _project(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    if type(spec) is not dict:
        raise CommandError(15969, "$project specification must be an object")
    projection = Projection(spec, variables, find=False)
    return (projection(doc) for doc in docs)


def _unset(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    fields = [spec] if isinstance(spec, str) else spec
    if type(fields) is not list or not all(isinstance(field, str) for field in fields):
        raise CommandError(31002, "$unset specification must be a string or an array of strings")
    return _project(docs, dict.fromkeys(fields, 0), variables)


def _add_fields(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    if type(spec) is not dict:
        raise CommandError(40272, "$addFields specification stage must be an object")
    fields = [(key.split("."), expr) for key, expr in spec.items()]
    for doc in docs:
        scope = {**variables, "ROOT": doc}
        # One copy takes every top-level field (a dotted path copies along its own way);
        # every expression reads the input document.
        out = dict(doc)
        for parts, expr in fields:
            value = evaluate(expr, doc, scope)
            if len(parts) > 1:
                out = set_path_copy(out, parts, value)
            elif value is MISSING:
                out.pop(parts[0], None)
            else:
                out[parts[0]] = value
        yield out


def _replace_root(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    expr = spec["newRoot"] if type(spec) is dict and "newRoot" in spec else spec
    return _replace_with(docs, expr, variables)


def _replace_with(docs: Iterable[Doc], expr: Any, variables: Variables) -> Iterator[Doc]:
    for doc in docs:
        value = evaluate(expr, doc, {**variables, "ROOT": doc})
        if type(value) is not dict:
            raise CommandError(
                40228,
                "'replacement document' must evaluate to an object, but resulting value "
                f"was: {value!r}",
            )
        yield value


def _limit(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    count = _positive(spec, "$limit")
    if count == 0:
        raise CommandError(15958, "the limit must be positive")
    for index, doc in enumerate(docs):
        if index >= count:
            return
        yield doc


def _skip(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    count = _positive(spec, "$skip")
    for index, doc in enumerate(docs):
        if index >= count:
            yield doc


def _count(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    if not isinstance(spec, str) or not spec or spec.startswith("$") or "." in spec:
        raise CommandError(40156, "the count field must be a non-empty string")
    total = sum(1 for _ in docs)
    if total:
        yield {spec: total}


def _unwind(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    options = spec if type(spec) is dict else {"path": spec}
    path = options.get("path")
    if not isinstance(path, str) or not path.startswith("$"):
        raise CommandError(28818, "path option to $unwind stage should be prefixed with a '$'")
    parts = path[1:].split(".")
    index_field = options.get("includeArrayIndex")
    preserve = bool(options.get("preserveNullAndEmptyArrays"))
    for doc in docs:
        value = get_path(doc, parts)
        if type(value) is list and value:
            for position, item in enumerate(value):
                out = set_path_copy(doc, parts, item)
                yield out if index_field is None else set_path_copy(out, [index_field], position)
        elif type(value) is list or value is None or value is MISSING:
            if preserve:
                yield doc if index_field is None else set_path_copy(doc, [index_field], None)
        else:
            yield doc if index_field is None else set_path_copy(doc, [index_field], None)


class _Accumulator:
    """One ``$group`` accumulator's running state for one group."""

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self.value: Any = MISSING
        self.items: list[Any] = []
        self.seen: set[Any] = set()

    def add(self, value: Any) -> None:
        operator = self.operator
        if operator in ("$sum", "$count"):
            if self.value is MISSING:
                self.value = 0
            if is_number(value):
                self.value = arithmetic(self.value, value, lambda x, y: x + y)
        elif operator == "$avg":
            if is_number(value):
                self.items.append(float(number(value)))
        elif operator in ("$min", "$max"):
            if value is None or value is MISSING:
                return
            wanted = -1 if operator == "$min" else 1
            if self.value is MISSING or compare(value, self.value) == wanted:
                self.value = value
        elif operator == "$first":
            if not self.seen:
                self.value = None if value is MISSING else value
                self.seen.add(True)
        elif operator == "$last":
            self.value = None if value is MISSING else value
        elif operator == "$push":
            if value is not MISSING:
                self.items.append(value)
        elif operator == "$addToSet":
            if value is not MISSING and hkey(value) not in self.seen:
                self.seen.add(hkey(value))
                self.items.append(value)
        elif operator == "$mergeObjects" and type(value) is dict:
            self.value = {**(self.value if self.value is not MISSING else {}), **value}

    def result(self) -> Any:
        operator = self.operator
        if operator == "$avg":
            return sum(self.items) / len(self.items) if self.items else None
        if operator in ("$push", "$addToSet"):
            return self.items
        if operator in ("$sum", "$count"):
            return 0 if self.value is MISSING else self.value
        if operator == "$mergeObjects":
            return {} if self.value is MISSING else self.value
        return None if self.value is MISSING else self.value


_ACCUMULATORS: Final = frozenset(
    {
        "$sum",
        "$count",
        "$avg",
        "$min",
        "$max",
        "$first",
        "$last",
        "$push",
        "$addToSet",
        "$mergeObjects",
    }
)


def _group(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    if type(spec) is not dict or "_id" not in spec:
        raise CommandError(15955, "a group specification must include an _id")
    fields: list[tuple[str, str, Any]] = []
    for name, accumulator in spec.items():
        if name == "_id":
            continue
        if type(accumulator) is not dict or len(accumulator) != 1:
            raise CommandError(40238, f"The field '{name}' must specify one accumulator")
        operator, expr = next(iter(accumulator.items()))
        if operator not in _ACCUMULATORS:
            raise CommandError(15952, f"unknown group operator '{operator}'")
        fields.append((name, operator, 1 if operator == "$count" else expr))
    groups: dict[Any, tuple[Any, list[_Accumulator]]] = {}
    for doc in docs:
        scope = {**variables, "ROOT": doc}
        key_value = evaluate(spec["_id"], doc, scope)
        key_value = None if key_value is MISSING else key_value
        entry = groups.get(hkey(key_value))
        if entry is None:
            entry = (key_value, [_Accumulator(operator) for _, operator, _ in fields])
            groups[hkey(key_value)] = entry
        for (_, _, expr), accumulator in zip(fields, entry[1], strict=True):
            accumulator.add(evaluate(expr, doc, scope))
    for key_value, accumulators in groups.values():
        out: Doc = {"_id": key_value}
        for (name, _, _), accumulator in zip(fields, accumulators, strict=True):
            out[name] = accumulator.result()
        yield out


def _sort_stage(docs: Iterable[Doc], spec: Any, variables: Variables) -> Iterator[Doc]:
    return iter(sort_documents(docs, spec))


_Stage = Callable[[Iterable[Doc], Any, Variables], Iterator[Doc]]
_STAGES: Final[dict[str, _Stage]] = {
    "$match": _match,
    "$project": _project,
    "$unset": _unset,
    "$addFields": _add_fields,
    "$set": _add_fields,
    "$replaceRoot": _replace_root,
    "$replaceWith": _replace_with,
    "$limit": _limit,
    "$skip": _skip,
    "$count": _count,
    "$unwind": _unwind,
    "$group": _group,
    "$sort": _sort_stage,
}
