"""Collections: documents in insertion order, hash indexes and unique constraints.

Every declared index offers a hash map for each prefix of its key (``{a: 1, b: 1}`` gives
maps on ``a`` and on ``(a, b)``), holding every document whatever the index's partial filter,
so a filter with equalities on those fields reads its candidates from a map instead of
scanning. A map is built the first time a query needs it and kept in step from then on:
the maps no query uses cost nothing on every write. Unique indexes keep their own map of the
documents they cover, which is how duplicate keys are refused without a scan.

An update touches only the maps and unique indexes that read a top-level field whose value
changed; stored documents are never changed in place, so a field an update left alone holds
the very same object in the new document as in the old.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from bson import ObjectId

from tests.mongo_standin.errors import CommandError
from tests.mongo_standin.matching import Predicate, compile_filter, equality_fields, filter_roots
from tests.mongo_standin.values import (
    MISSING,
    NULL_KEY,
    hkey,
    is_number,
    query_leaves,
    shell_repr,
)

Doc = dict[str, Any]
_Key = tuple[Any, ...]
_Prefix = tuple[str, ...]  # the first fields of an index's key

# Beyond this many candidates a map is no better than a scan, and a scan keeps natural order.
_SELECTIVE_SHARE: Final = 4
_MAX_LOOKUPS: Final = 256
_MAX_SHAPES: Final = 256  # query shapes whose usable maps are remembered
_ORDERED_KINDS: Final = (1, -1)


class Index:
    """One declared index: its key, options and, when unique, the keys it already holds."""

    def __init__(self, spec: Mapping[str, Any], namespace: str) -> None:
        key = spec.get("key")
        if not isinstance(key, Mapping) or not key:
            raise CommandError(67, "The index spec 'key' must be a non-empty object")
        self.key: list[tuple[str, Any]] = list(key.items())
        self.name: str = spec.get("name") or "_".join(f"{f}_{d}" for f, d in self.key)
        self.namespace = namespace
        self.unique = bool(spec.get("unique")) or self.name == "_id_"
        self.sparse = bool(spec.get("sparse"))
        self.partial: Mapping[str, Any] | None = spec.get("partialFilterExpression")
        self.partial_test: Predicate | None = (
            compile_filter(self.partial, {}) if self.partial is not None else None
        )
        self.fields = [field for field, _ in self.key]
        self.parts = [field.split(".") for field in self.fields]
        self.top_level = all(len(parts) == 1 for parts in self.parts)
        self.single_field = self.top_level and len(self.parts) == 1
        self.roots = _index_roots(self.parts, self.partial)
        self.hashable = all(
            direction == "hashed" or (is_number(direction) and direction in _ORDERED_KINDS)
            for _, direction in self.key
        )
        self.spec: Doc = {"v": 2, "key": dict(self.key), "name": self.name}
        for option, value in spec.items():
            if option not in ("key", "name", "v", "ns"):
                self.spec[option] = value
        self.entries: dict[_Key, int] = {}

    def same_as(self, other: Index) -> bool:
        options = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds")
        return self.key == other.key and all(
            self.spec.get(name) == other.spec.get(name) for name in options
        )

    def reads(self, roots: set[str]) -> bool:
        """Whether this index's keys or partial filter read any of the top-level ``roots``."""
        return self.roots is None or not self.roots.isdisjoint(roots)

    def unique_keys(self, doc: Doc) -> list[tuple[_Key, tuple[Any, ...]]]:
        """The keys this unique index holds for ``doc`` with their values (for the error
        message); none when the partial filter or sparseness leaves the document out."""
        if self.partial_test is not None and not self.partial_test(doc):
            return []
        if self.single_field:  # one top-level field: the common case, made short
            value = doc.get(self.fields[0], MISSING)
            if value is MISSING:
                return [] if self.sparse else [((NULL_KEY,), (None,))]
            if type(value) is not list:
                return [((hkey(value),), (value,))]
        elif self.top_level:
            top = [doc.get(field, MISSING) for field in self.fields]
            if list not in map(type, top):
                return self._single_key(top)
        per_field: list[list[tuple[Any, Any]]] = []
        present = False
        for parts in self.parts:
            values: list[tuple[Any, Any]] = []
            for leaf in query_leaves(doc, parts):
                if leaf is MISSING:
                    values.append((NULL_KEY, None))
                    continue
                present = True
                if type(leaf) is list:
                    values.extend((hkey(item), item) for item in leaf)
                    if not leaf:
                        values.append((("\0undefined",), []))
                else:
                    values.append((hkey(leaf), leaf))
            per_field.append(values)
        if self.sparse and not present:
            return []
        keys: dict[_Key, tuple[Any, ...]] = {}
        for combo in itertools.product(*per_field):
            keys.setdefault(tuple(key for key, _ in combo), tuple(raw for _, raw in combo))
        return list(keys.items())

    def _single_key(self, values: list[Any]) -> list[tuple[_Key, tuple[Any, ...]]]:
        """``unique_keys`` when every key field is top-level and none holds an array: one
        key (the common case, without the products of the general one)."""
        if self.sparse and all(value is MISSING for value in values):
            return []
        key = tuple([NULL_KEY if value is MISSING else hkey(value) for value in values])
        return [(key, tuple([None if value is MISSING else value for value in values]))]

    def duplicate(self, values: tuple[Any, ...]) -> CommandError:
        """The error a real server gives for a duplicate key in this index."""
        shown = ", ".join(
            f"{field}: {shell_repr(value)}"
            for field, value in zip(self.fields, values, strict=True)
        )
        return CommandError(
            11000,
            f"E11000 duplicate key error collection: {self.namespace} index: {self.name} "
            f"dup key: {{ {shown} }}",
            keyPattern=dict(self.key),
            keyValue=dict(zip(self.fields, values, strict=True)),
        )


def _index_roots(
    parts: list[list[str]], partial: Mapping[str, Any] | None
) -> frozenset[str] | None:
    """The top-level fields an index reads (keys and partial filter); None for any."""
    roots = frozenset(path[0] for path in parts)
    if partial is None:
        return roots
    read = filter_roots(partial)
    return None if read is None else roots | read


def changed_roots(old: Doc, new: Doc) -> set[str]:
    """The top-level fields whose values an update replaced, added or removed.

    Identity is enough: stored documents are never changed in place, so an update that left a
    field alone passes on the same object, and one that did not made a new one."""
    roots = {name for name, value in new.items() if old.get(name, MISSING) is not value}
    roots.update(old.keys() - new.keys())
    return roots


# The keys of a document in a map, for one field: one key alone, or a set of them.
_Keys = tuple[Any] | frozenset[Any]
_NULL_KEYS: Final = (NULL_KEY,)


def _field_keys(doc: Doc, parts: list[str]) -> _Keys:
    """Every value an equality on the path could match in ``doc`` (arrays and elements)."""
    if len(parts) == 1:  # a top-level field: the common case, made short
        value = doc.get(parts[0], MISSING)
        if value is MISSING:
            return _NULL_KEYS
        if type(value) is not list:
            return (hkey(value),)
    keys = set()
    for leaf in query_leaves(doc, parts):
        if leaf is MISSING:
            keys.add(NULL_KEY)
            continue
        keys.add(hkey(leaf))
        if type(leaf) is list:
            keys.update(hkey(item) for item in leaf)
    return frozenset(keys)


class Collection:
    """Documents by record id in insertion order, with their indexes."""

    def __init__(self, database: str, name: str, options: Mapping[str, Any] | None = None):
        self.database = database
        self.name = name
        self.namespace = f"{database}.{name}"
        self.options: Doc = dict(options or {})
        self.uuid = uuid.uuid4()
        self.docs: dict[int, Doc] = {}
        self._next_rid = 1
        self.indexes: dict[str, Index] = {}
        # Hash maps by key prefix, built on first use (see the module docstring).
        self._prefixes: list[tuple[_Prefix, frozenset[str]]] = []
        self._usable_by_fields: dict[frozenset[str], list[_Prefix]] = {}
        self._maps: dict[_Prefix, dict[_Key, set[int]]] = {}
        self._fields: dict[str, list[str]] = {}
        self._map_roots: dict[_Prefix, frozenset[str]] = {}
        self._unique_indexes: list[Index] = []
        self.create_index({"key": {"_id": 1}, "name": "_id_"})

    # -- indexes --------------------------------------------------------------------------

    def create_index(self, spec: Mapping[str, Any]) -> bool:
        """Add an index (False when an identical one exists); refuses conflicting ones and,
        for a unique index, data that already holds duplicates."""
        index = Index(spec, self.namespace)
        existing = self.indexes.get(index.name)
        if existing is not None:
            if existing.same_as(index):
                return False
            raise CommandError(
                86 if existing.key != index.key else 85,
                "An existing index has the same name as the requested index. Requested index: "
                f"{index.spec}, existing index: {existing.spec}",
            )
        for other in self.indexes.values():
            if other.key == index.key and other.partial == index.partial:
                if other.same_as(index):
                    return False
                raise CommandError(85, f"Index already exists with a different name: {other.name}")
        if index.unique:
            for rid, doc in self.docs.items():
                for key, values in index.unique_keys(doc):
                    if key in index.entries:
                        raise index.duplicate(values)
                    index.entries[key] = rid
        self.indexes[index.name] = index
        self._indexes_changed()
        return True

    def drop_index(self, name: str) -> None:
        if name == "_id_":
            raise CommandError(72, "cannot drop _id index")
        if name not in self.indexes:
            raise CommandError(27, f"index not found with name [{name}]")
        del self.indexes[name]
        self._indexes_changed()

    def find_index_by_key(self, key: Mapping[str, Any]) -> str:
        for index in self.indexes.values():
            if index.key == list(key.items()):
                return index.name
        raise CommandError(27, f"can't find index with key: {dict(key)}")

    def _indexes_changed(self) -> None:
        """After the indexes changed: the prefixes a query may look up (longest first, the
        most selective), dropping the built maps no index offers any more."""
        wanted = {
            tuple(index.fields[:size])
            for index in self.indexes.values()
            if index.hashable
            for size in range(1, len(index.fields) + 1)
        }
        longest_first = sorted(wanted, key=lambda prefix: (-len(prefix), prefix))
        self._prefixes = [(prefix, frozenset(prefix)) for prefix in longest_first]
        self._usable_by_fields = {}
        for prefix in list(self._maps):
            if prefix not in wanted:
                del self._maps[prefix]
        self._unique_indexes = [index for index in self.indexes.values() if index.unique]
        self._map_layout()

    def _map_layout(self) -> None:
        """The fields the built maps read, and the top-level fields each map depends on."""
        self._fields = {field: field.split(".") for prefix in self._maps for field in prefix}
        self._map_roots = {
            prefix: frozenset(field.split(".")[0] for field in prefix) for prefix in self._maps
        }

    def _build_map(self, prefix: _Prefix) -> dict[_Key, set[int]]:
        mapping: dict[_Key, set[int]] = {}
        self._maps[prefix] = mapping
        self._map_layout()
        for rid, doc in self.docs.items():
            keys = {field: _field_keys(doc, self._fields[field]) for field in prefix}
            self._map_add(rid, keys, [prefix])
        return mapping

    def _doc_keys(self, doc: Doc, fields: Iterable[str]) -> dict[str, _Keys]:
        return {field: _field_keys(doc, self._fields[field]) for field in fields}

    def _map_add(self, rid: int, keys: dict[str, _Keys], only: Iterable[Any]) -> None:
        for prefix in only:
            mapping = self._maps[prefix]
            for key in itertools.product(*[keys[field] for field in prefix]):
                bucket = mapping.get(key)
                if bucket is None:
                    mapping[key] = {rid}
                else:
                    bucket.add(rid)

    def _map_remove(self, rid: int, keys: dict[str, _Keys], only: Iterable[Any]) -> None:
        for prefix in only:
            mapping = self._maps[prefix]
            for key in itertools.product(*[keys[field] for field in prefix]):
                bucket = mapping.get(key)
                if bucket is not None:
                    bucket.discard(rid)
                    if not bucket:
                        del mapping[key]

    def _remap(self, rid: int, old: Doc, new: Doc, roots: set[str]) -> None:
        """Move ``rid`` in the built maps whose keys differ between ``old`` and ``new``;
        only the maps that read a changed top-level field (``roots``) can differ."""
        prefixes = [
            prefix for prefix, read in self._map_roots.items() if not read.isdisjoint(roots)
        ]
        if not prefixes:
            return
        old_keys: dict[str, _Keys] = {}
        new_keys: dict[str, _Keys] = {}
        for prefix in prefixes:
            for field in prefix:
                if field not in old_keys:
                    parts = self._fields[field]
                    old_keys[field] = keys = _field_keys(old, parts)
                    # A field under an unchanged root holds the very same value in both.
                    new_keys[field] = _field_keys(new, parts) if parts[0] in roots else keys
        changed = [prefix for prefix in prefixes if any(old_keys[f] != new_keys[f] for f in prefix)]
        if changed:
            self._map_remove(rid, old_keys, changed)
            self._map_add(rid, new_keys, changed)

    # -- documents ------------------------------------------------------------------------

    def _unique_plan(
        self, doc: Doc, rid: int | None, indexes: Iterable[Index]
    ) -> list[tuple[Index, list[_Key]]]:
        """The keys ``doc`` needs in the unique ``indexes``, raising DuplicateKey if another
        document holds one."""
        plan = []
        for index in indexes:
            keys = index.unique_keys(doc)
            for key, values in keys:
                holder = index.entries.get(key)
                if holder is not None and holder != rid:
                    raise index.duplicate(values)
            plan.append((index, [key for key, _ in keys]))
        return plan

    def _unique_remove(self, rid: int, doc: Doc, indexes: Iterable[Index]) -> None:
        for index in indexes:
            for key, _ in index.unique_keys(doc):
                if index.entries.get(key) == rid:
                    del index.entries[key]

    def insert(self, doc: Doc) -> Doc:
        """Store ``doc`` (given an ObjectId ``_id`` first if it has none) and return it."""
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
        plan = self._unique_plan(doc, None, self._unique_indexes)
        rid = self._next_rid
        self._next_rid += 1
        for index, keys in plan:
            for key in keys:
                index.entries[key] = rid
        self.docs[rid] = doc
        self._map_add(rid, self._doc_keys(doc, self._fields), self._maps)
        return doc

    def replace(self, rid: int, new: Doc) -> None:
        """Swap the stored document for ``new`` once the unique indexes accept it. Only the
        indexes that read a changed field are looked at: the others hold the same keys for
        both documents, already pointing at ``rid``."""
        old = self.docs[rid]
        roots = changed_roots(old, new)
        uniques = [index for index in self._unique_indexes if index.reads(roots)]
        if uniques:
            plan = self._unique_plan(new, rid, uniques)
            self._unique_remove(rid, old, uniques)
            for index, keys in plan:
                for key in keys:
                    index.entries[key] = rid
        self._remap(rid, old, new, roots)
        self.docs[rid] = new

    def delete(self, rid: int) -> None:
        doc = self.docs.pop(rid)
        self._unique_remove(rid, doc, self._unique_indexes)
        self._map_remove(rid, self._doc_keys(doc, self._fields), self._maps)

    # -- queries --------------------------------------------------------------------------

    def candidate_ids(self, spec: Mapping[str, Any] | None) -> list[int]:
        """Record ids that may match ``spec``, in record order: from the most selective hash
        map its equalities allow, else every document. Any map gives a superset of the
        matches, so which one is read changes only the cost, never the result."""
        equalities = equality_fields(spec)
        if not equalities:
            return list(self.docs)
        best: list[set[int]] | None = None
        best_size = 0
        enough = max(len(self.docs), 64)
        # The keys to look up in the maps of the prefixes whose every field has equalities,
        # longest first (left out when they would be more than ``_MAX_LOOKUPS``).
        hashed: dict[str, list[Any]] = {}
        for prefix in self._usable(frozenset(equalities)):
            lookups = math.prod([len(equalities[field]) for field in prefix])
            if lookups > _MAX_LOOKUPS:
                continue
            for field in prefix:
                if field not in hashed:
                    hashed[field] = [hkey(value) for value in equalities[field]]
            mapping = self._maps.get(prefix)
            if mapping is None:
                if best is not None and best_size * _SELECTIVE_SHARE <= enough:
                    continue  # a selective map is at hand: building another would not pay
                mapping = self._build_map(prefix)
            if lookups == 1:
                bucket = mapping.get(tuple([hashed[field][0] for field in prefix]))
                buckets = [bucket] if bucket else []
            else:
                keys = itertools.product(*[hashed[field] for field in prefix])
                buckets = [bucket for key in keys if (bucket := mapping.get(key))]
            size = sum(map(len, buckets))
            if best is None or size < best_size:
                best, best_size = buckets, size
                if size <= 1:
                    break
        if best is None or best_size * _SELECTIVE_SHARE > enough:
            return list(self.docs)
        if len(best) == 1:
            return sorted(best[0])
        return sorted(set().union(*best))

    def _usable(self, fields: frozenset[str]) -> list[_Prefix]:
        """The prefixes made only of ``fields``, longest first; remembered, since a program
        sends queries of a few shapes only (forgotten when the indexes change)."""
        usable = self._usable_by_fields.get(fields)
        if usable is None:
            if len(self._usable_by_fields) >= _MAX_SHAPES:
                self._usable_by_fields.clear()
            usable = [prefix for prefix, names in self._prefixes if names <= fields]
            self._usable_by_fields[fields] = usable
        return usable

    def scan(self, spec: Mapping[str, Any] | None, test: Predicate) -> Iterator[tuple[int, Doc]]:
        """Matching documents with their record ids; safe against writes between steps."""
        docs = self.docs
        for rid in self.candidate_ids(spec):
            doc = docs.get(rid)
            if doc is not None and test(doc):
                yield rid, doc


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        self.collections: dict[str, Collection] = {}

    def get(self, name: str, *, create: bool = False) -> Collection | None:
        collection = self.collections.get(name)
        if collection is None and create:
            _check_collection_name(name)
            collection = self.collections[name] = Collection(self.name, name)
        return collection


def _check_collection_name(name: str) -> None:
    if not isinstance(name, str) or not name or "$" in name or name.startswith("."):
        raise CommandError(73, f"Invalid collection name: {name}")
