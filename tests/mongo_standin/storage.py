"""Collections: documents in insertion order, hash indexes and unique constraints.

Every declared index contributes a hash map for each prefix of its key (``{a: 1, b: 1}`` gives
maps on ``a`` and on ``(a, b)``), holding every document whatever the index's partial filter,
so a filter with equalities on those fields reads its candidates from a map instead of
scanning. Unique indexes keep their own map of the documents they cover, which is how
duplicate keys are refused without a scan.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from bson import ObjectId

from tests.mongo_standin.errors import CommandError
from tests.mongo_standin.matching import Predicate, compile_filter, equality_fields
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

# Beyond this many candidates a map is no better than a scan, and a scan keeps natural order.
_SELECTIVE_SHARE: Final = 4
_MAX_LOOKUPS: Final = 256
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

    def unique_keys(self, doc: Doc) -> list[tuple[_Key, tuple[Any, ...]]]:
        """The keys this unique index holds for ``doc`` with their values (for the error
        message); none when the partial filter or sparseness leaves the document out."""
        if self.partial_test is not None and not self.partial_test(doc):
            return []
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


def _field_keys(doc: Doc, parts: list[str]) -> frozenset[Any]:
    """Every value an equality on the path could match in ``doc`` (arrays and elements)."""
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
        self._maps: dict[tuple[str, ...], dict[_Key, set[int]]] = {}
        self._fields: dict[str, list[str]] = {}
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
        self._rebuild_maps()
        return True

    def drop_index(self, name: str) -> None:
        if name == "_id_":
            raise CommandError(72, "cannot drop _id index")
        if name not in self.indexes:
            raise CommandError(27, f"index not found with name [{name}]")
        del self.indexes[name]
        self._rebuild_maps()

    def find_index_by_key(self, key: Mapping[str, Any]) -> str:
        for index in self.indexes.values():
            if index.key == list(key.items()):
                return index.name
        raise CommandError(27, f"can't find index with key: {dict(key)}")

    def _rebuild_maps(self) -> None:
        wanted = {
            tuple(index.fields[:size])
            for index in self.indexes.values()
            if index.hashable
            for size in range(1, len(index.fields) + 1)
        }
        for prefix in list(self._maps):
            if prefix not in wanted:
                del self._maps[prefix]
        self._fields = {field: field.split(".") for prefix in wanted for field in prefix}
        for prefix in wanted - self._maps.keys():
            mapping: dict[_Key, set[int]] = {}
            for rid, doc in self.docs.items():
                keys = {field: _field_keys(doc, field.split(".")) for field in prefix}
                for key in itertools.product(*(keys[field] for field in prefix)):
                    mapping.setdefault(key, set()).add(rid)
            self._maps[prefix] = mapping

    def _doc_keys(self, doc: Doc) -> dict[str, frozenset[Any]]:
        return {field: _field_keys(doc, parts) for field, parts in self._fields.items()}

    def _map_add(self, rid: int, keys: dict[str, frozenset[Any]], only: Iterable[Any]) -> None:
        for prefix in only:
            mapping = self._maps[prefix]
            for key in itertools.product(*(keys[field] for field in prefix)):
                bucket = mapping.get(key)
                if bucket is None:
                    mapping[key] = {rid}
                else:
                    bucket.add(rid)

    def _map_remove(self, rid: int, keys: dict[str, frozenset[Any]], only: Iterable[Any]) -> None:
        for prefix in only:
            mapping = self._maps[prefix]
            for key in itertools.product(*(keys[field] for field in prefix)):
                bucket = mapping.get(key)
                if bucket is not None:
                    bucket.discard(rid)
                    if not bucket:
                        del mapping[key]

    # -- documents ------------------------------------------------------------------------

    def _unique_plan(self, doc: Doc, rid: int | None) -> list[tuple[Index, list[_Key]]]:
        """The unique keys ``doc`` needs, raising DuplicateKey if another document holds one."""
        plan = []
        for index in self.indexes.values():
            if not index.unique:
                continue
            keys = index.unique_keys(doc)
            for key, values in keys:
                holder = index.entries.get(key)
                if holder is not None and holder != rid:
                    raise index.duplicate(values)
            plan.append((index, [key for key, _ in keys]))
        return plan

    def insert(self, doc: Doc) -> Doc:
        """Store ``doc`` (given an ObjectId ``_id`` first if it has none) and return it."""
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
        plan = self._unique_plan(doc, None)
        rid = self._next_rid
        self._next_rid += 1
        for index, keys in plan:
            for key in keys:
                index.entries[key] = rid
        self.docs[rid] = doc
        self._map_add(rid, self._doc_keys(doc), self._maps)
        return doc

    def replace(self, rid: int, new: Doc) -> None:
        """Swap the stored document for ``new`` once the unique indexes accept it."""
        old = self.docs[rid]
        plan = self._unique_plan(new, rid)
        for index in self.indexes.values():
            if index.unique:
                for key, _ in index.unique_keys(old):
                    if index.entries.get(key) == rid:
                        del index.entries[key]
        for index, keys in plan:
            for key in keys:
                index.entries[key] = rid
        old_keys, new_keys = self._doc_keys(old), self._doc_keys(new)
        changed = [
            prefix
            for prefix in self._maps
            if any(old_keys[field] != new_keys[field] for field in prefix)
        ]
        if changed:
            self._map_remove(rid, old_keys, changed)
            self._map_add(rid, new_keys, changed)
        self.docs[rid] = new

    def delete(self, rid: int) -> None:
        doc = self.docs.pop(rid)
        for index in self.indexes.values():
            if index.unique:
                for key, _ in index.unique_keys(doc):
                    if index.entries.get(key) == rid:
                        del index.entries[key]
        self._map_remove(rid, self._doc_keys(doc), self._maps)

    # -- queries --------------------------------------------------------------------------

    def candidate_ids(self, spec: Mapping[str, Any] | None) -> list[int]:
        """Record ids that may match ``spec``, in record order: from the most selective hash
        map its equalities allow, else every document."""
        equalities = equality_fields(spec)
        best: list[set[int]] | None = None
        best_size = 0
        if equalities:
            for prefix, mapping in self._maps.items():
                if not all(field in equalities for field in prefix):
                    continue
                choices = [equalities[field] for field in prefix]
                lookups = 1
                for values in choices:
                    lookups *= len(values)
                if lookups > _MAX_LOOKUPS:
                    continue
                buckets = []
                for combo in itertools.product(*choices):
                    bucket = mapping.get(tuple(hkey(value) for value in combo))
                    if bucket:
                        buckets.append(bucket)
                size = sum(len(bucket) for bucket in buckets)
                if best is None or size < best_size:
                    best, best_size = buckets, size
                    if size <= 1:
                        break
        if best is None or best_size * _SELECTIVE_SHARE > max(len(self.docs), 64):
            return list(self.docs)
        if len(best) == 1:
            return sorted(best[0])
        return sorted(set().union(*best))

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
