"""Database commands: reply shapes as MongoDB 7.0 gives them, so PyMongo parses them as usual.

The engine is synchronous and knows nothing of sockets or fault injection; the server in
``server.py`` decides whether a command runs at all.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import bson
from bson import Binary, Int64, ObjectId, Timestamp
from bson.raw_bson import RawBSONDocument

from tests.mongo_standin.errors import CommandError, bad_value
from tests.mongo_standin.expressions import Variables
from tests.mongo_standin.matching import compile_filter
from tests.mongo_standin.pipeline import Projection, compile_sort, run_pipeline, sort_documents
from tests.mongo_standin.storage import Collection, Database
from tests.mongo_standin.updates import apply_update, is_replacement, new_id, upsert_seed
from tests.mongo_standin.values import MISSING, hkey, is_number, number, query_leaves, utcnow

Doc = dict[str, Any]

VERSION: Final = "7.0.0"
MAX_WIRE_VERSION: Final = 21
MAX_BSON_SIZE: Final = 16 * 1024 * 1024
MAX_MESSAGE_SIZE: Final = 48_000_000
MAX_WRITE_BATCH: Final = 100_000
SET_NAME: Final = "standin"
DEFAULT_BATCH: Final = 101
_BATCH_BYTES: Final = MAX_BSON_SIZE - 1024 * 1024
_CURSOR_IDLE_SECONDS: Final = 600.0
HELLO_COMMANDS: Final = frozenset({"hello", "isMaster", "ismaster"})
RETRYABLE_WRITE_COMMANDS: Final = frozenset({"insert", "update", "delete", "findAndModify"})


@dataclass
class Cursor:
    """An open server cursor: the rest of a result, produced lazily on getMore."""

    id: int
    namespace: str
    source: Iterator[Doc]
    remaining: int | None
    used_at: float = field(default_factory=time.monotonic)


def _count_arg(command: Mapping[str, Any], name: str) -> int:
    value = command.get(name, 0)
    if value is None:
        return 0
    if not is_number(value) or number(value) != int(number(value)):
        raise CommandError(14, f"'{name}' field must be numeric")
    return int(number(value))


class Engine:
    """The databases and cursors, and the handler of every supported command."""

    def __init__(self) -> None:
        self.databases: dict[str, Database] = {}
        self.cursors: dict[int, Cursor] = {}
        self._last_writes: dict[bytes, tuple[int, Doc]] = {}
        self.address = "127.0.0.1:27017"
        self.started = time.monotonic()
        self._handlers: dict[str, Callable[[Doc, str, Variables], Doc]] = {
            "ping": lambda command, db, variables: {"ok": 1.0},
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "getParameter": self._get_parameter,
            "serverStatus": self._server_status,
            "connectionStatus": self._connection_status,
            "endSessions": lambda command, db, variables: {"ok": 1.0},
            "killCursors": self._kill_cursors,
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "find": self._find,
            "getMore": self._get_more,
            "findAndModify": self._find_and_modify,
            "findandmodify": self._find_and_modify,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
            "createIndexes": self._create_indexes,
            "listIndexes": self._list_indexes,
            "listCollections": self._list_collections,
            "listDatabases": self._list_databases,
            "create": self._create,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
            "dropIndexes": self._drop_indexes,
            "deleteIndexes": self._drop_indexes,
            "dbStats": self._db_stats,
        }

    # -- dispatch -------------------------------------------------------------------------

    def run(self, command: Doc, db: str, *, connection_id: int = 0) -> Doc:
        """The reply to one command; server errors become ``{ok: 0}`` replies."""
        name = next(iter(command), "")
        try:
            if name in HELLO_COMMANDS:
                return self.hello(command, connection_id)
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError(59, f"no such command: '{name}'")
            if "startTransaction" in command or "autocommit" in command:
                raise CommandError(20, "the MongoDB stand-in does not support transactions")
            collation = command.get("collation")
            if isinstance(collation, Mapping) and collation.get("locale") != "simple":
                raise CommandError(115, "the MongoDB stand-in does not implement collation")
            retry = self._retried(name, command)
            if retry is not None:
                return dict(retry)
            variables: Doc = {"NOW": utcnow(), "CLUSTER_TIME": Timestamp(int(time.time()), 1)}
            if isinstance(command.get("let"), Mapping):
                variables.update(command["let"])
            reply = handler(command, db, variables)
        except CommandError as error:
            return error.reply()
        except Exception as error:  # a stand-in bug must not leave the client waiting
            traceback.print_exc()
            return CommandError(1, f"internal error in the MongoDB stand-in: {error!r}").reply()
        self._remember(name, command, reply)
        return reply

    def _session(self, command: Doc) -> bytes | None:
        lsid = command.get("lsid")
        if "txnNumber" not in command or not isinstance(lsid, Mapping):
            return None
        return bytes(lsid.get("id", b""))

    def _retried(self, name: str, command: Doc) -> Doc | None:
        """The saved reply when a retryable write is retried after it was applied (a lost
        reply, or a write concern error): a real server does not apply it twice."""
        if name not in RETRYABLE_WRITE_COMMANDS:
            return None
        session = self._session(command)
        saved = self._last_writes.get(session) if session is not None else None
        if saved is not None and saved[0] == int(command["txnNumber"]):
            return saved[1]
        return None

    def _remember(self, name: str, command: Doc, reply: Doc) -> None:
        """Keep the last applied retryable write of each session (as a server does)."""
        session = self._session(command)
        if name in RETRYABLE_WRITE_COMMANDS and session is not None and reply.get("ok"):
            self._last_writes[session] = (int(command["txnNumber"]), dict(reply))
        if name == "endSessions":
            for lsid in command.get("endSessions", []):
                if isinstance(lsid, Mapping):
                    self._last_writes.pop(bytes(lsid.get("id", b"")), None)

    def hello(self, command: Mapping[str, Any], connection_id: int) -> Doc:
        """A single-member replica set primary: what makes PyMongo use sessions and
        retryable writes (a standalone gets neither)."""
        name = next(iter(command), "hello")
        reply: Doc = {}
        if command.get("helloOk"):
            reply["helloOk"] = True
        reply["isWritablePrimary" if name == "hello" else "ismaster"] = True
        reply.update(
            {
                "hosts": [self.address],
                "setName": SET_NAME,
                "setVersion": 1,
                "secondary": False,
                "primary": self.address,
                "me": self.address,
                "electionId": ObjectId("7fffffff0000000000000001"),
                "maxBsonObjectSize": MAX_BSON_SIZE,
                "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
                "maxWriteBatchSize": MAX_WRITE_BATCH,
                "localTime": utcnow(),
                "logicalSessionTimeoutMinutes": 30,
                "connectionId": connection_id,
                "minWireVersion": 0,
                "maxWireVersion": MAX_WIRE_VERSION,
                "readOnly": False,
                "ok": 1.0,
            }
        )
        return reply

    # -- helpers --------------------------------------------------------------------------

    def _collection(self, db: str, name: Any, *, create: bool = False) -> Collection | None:
        if not isinstance(name, str):
            raise CommandError(73, f"collection name has invalid type {type(name).__name__}")
        database = self.databases.get(db)
        if database is None:
            if not create:
                return None
            database = self.databases[db] = Database(db)
        return database.get(name, create=create)

    def _open_cursor(
        self,
        namespace: str,
        source: Iterator[Doc],
        *,
        batch_size: int | None,
        limit: int | None = None,
        single_batch: bool = False,
    ) -> Doc:
        cursor = Cursor(0, namespace, source, limit)
        size = DEFAULT_BATCH if batch_size is None else batch_size
        batch, exhausted = self._next_batch(cursor, size)
        if not exhausted and not single_batch:
            self._prune_cursors()
            cursor.id = random.getrandbits(62) + 1
            self.cursors[cursor.id] = cursor
        return {
            "cursor": {"firstBatch": batch, "id": Int64(cursor.id), "ns": namespace},
            "ok": 1.0,
        }

    @staticmethod
    def _next_batch(cursor: Cursor, size: int | None) -> tuple[list[RawBSONDocument], bool]:
        """Up to ``size`` documents (and about 15 MB), and whether the result is exhausted."""
        batch: list[RawBSONDocument] = []
        total = 0
        while size is None or len(batch) < size:
            if cursor.remaining is not None and cursor.remaining <= 0:
                return batch, True
            doc = next(cursor.source, None)
            if doc is None:
                return batch, True
            raw = bson.encode(doc)
            batch.append(RawBSONDocument(raw))
            total += len(raw)
            if cursor.remaining is not None:
                cursor.remaining -= 1
            if total >= _BATCH_BYTES:
                break
        exhausted = cursor.remaining is not None and cursor.remaining <= 0
        return batch, exhausted

    def _prune_cursors(self) -> None:
        """Drop cursors left idle as long as a real server keeps them (10 minutes)."""
        deadline = time.monotonic() - _CURSOR_IDLE_SECONDS
        for cursor_id in [cid for cid, cur in self.cursors.items() if cur.used_at < deadline]:
            del self.cursors[cursor_id]

    # -- server information ---------------------------------------------------------------

    def _build_info(self, command: Doc, db: str, variables: Variables) -> Doc:
        return {
            "version": VERSION,
            "gitVersion": "0000000000000000000000000000000000000000",
            "versionArray": [7, 0, 0, 0],
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "storageEngines": ["standin"],
            "modules": [],
            "ok": 1.0,
        }

    def _get_parameter(self, command: Doc, db: str, variables: Variables) -> Doc:
        known: Doc = {
            "featureCompatibilityVersion": {"version": "7.0"},
            "authenticationMechanisms": [],
            "transactionLifetimeLimitSeconds": 60,
            "enableTestCommands": True,
        }
        if command.get("getParameter") == "*":
            return {**known, "ok": 1.0}
        wanted = [name for name in command if name != "getParameter" and name not in GENERIC_FIELDS]
        if any(name not in known for name in wanted) or not wanted:
            raise CommandError(72, "no option found to get")
        return {**{name: known[name] for name in wanted}, "ok": 1.0}

    def _server_status(self, command: Doc, db: str, variables: Variables) -> Doc:
        return {
            "host": self.address,
            "version": VERSION,
            "process": "mongod",
            "pid": Int64(os.getpid()),
            "uptime": float(time.monotonic() - self.started),
            "localTime": variables["NOW"],
            "storageEngine": {"name": "standin"},
            "ok": 1.0,
        }

    def _connection_status(self, command: Doc, db: str, variables: Variables) -> Doc:
        return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}, "ok": 1.0}

    # -- cursors --------------------------------------------------------------------------

    def _get_more(self, command: Doc, db: str, variables: Variables) -> Doc:
        cursor_id = int(command["getMore"])
        namespace = f"{db}.{command.get('collection')}"
        cursor = self.cursors.get(cursor_id)
        if cursor is None or cursor.namespace != namespace:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        cursor.used_at = time.monotonic()
        size = _count_arg(command, "batchSize") or None
        try:
            batch, exhausted = self._next_batch(cursor, size)
        except CommandError:
            self.cursors.pop(cursor_id, None)
            raise
        if exhausted:
            self.cursors.pop(cursor_id, None)
            cursor_id = 0
        return {
            "cursor": {"nextBatch": batch, "id": Int64(cursor_id), "ns": namespace},
            "ok": 1.0,
        }

    def _kill_cursors(self, command: Doc, db: str, variables: Variables) -> Doc:
        killed, not_found = [], []
        for cursor_id in command.get("cursors", []):
            if self.cursors.pop(int(cursor_id), None) is None:
                not_found.append(Int64(cursor_id))
            else:
                killed.append(Int64(cursor_id))
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": not_found,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    # -- reads ----------------------------------------------------------------------------

    def _matching(
        self, collection: Collection | None, query: Any, variables: Variables
    ) -> Iterator[Doc]:
        if collection is None:
            return iter(())
        test = compile_filter(query, variables)
        return (doc for _, doc in collection.scan(query, test))

    def _find(self, command: Doc, db: str, variables: Variables) -> Doc:
        name = command["find"]
        collection = self._collection(db, name)
        query = command.get("filter") or {}
        skip = _count_arg(command, "skip")
        limit = _count_arg(command, "limit")
        single_batch = bool(command.get("singleBatch"))
        if limit < 0:
            limit, single_batch = -limit, True
        if skip < 0:
            raise bad_value("skip value must be non-negative")
        docs = self._matching(collection, query, variables)
        if command.get("sort"):
            docs = iter(sort_documents(docs, command["sort"], skip + limit if limit else 0))
        if skip:
            docs = itertools.islice(docs, skip, None)
        if command.get("projection"):
            projection = Projection(command["projection"], variables, find=True)
            docs = map(projection, docs)
        batch_size = command.get("batchSize")
        return self._open_cursor(
            f"{db}.{name}",
            docs,
            batch_size=None if batch_size is None else _count_arg(command, "batchSize"),
            limit=limit or None,
            single_batch=single_batch,
        )

    def _aggregate(self, command: Doc, db: str, variables: Variables) -> Doc:
        name = command["aggregate"]
        if not isinstance(name, str):
            raise CommandError(115, "the stand-in supports only collection aggregations")
        pipeline = command.get("pipeline")
        if type(pipeline) is not list:
            raise CommandError(14, "'pipeline' option must be specified as an array")
        if not isinstance(command.get("cursor"), Mapping):
            raise CommandError(
                9, "The 'cursor' option is required, except for aggregate with the explain argument"
            )
        for stage in pipeline:
            if isinstance(stage, Mapping) and ({"$out", "$merge"} & stage.keys()):
                raise CommandError(115, "the stand-in does not support $out or $merge")
        collection = self._collection(db, name)
        query: Any = {}
        if pipeline and isinstance(pipeline[0], Mapping) and "$match" in pipeline[0]:
            query = pipeline[0]["$match"]
            pipeline = pipeline[1:]
        docs = run_pipeline(self._matching(collection, query, variables), pipeline, variables)
        batch_size = command["cursor"].get("batchSize")
        return self._open_cursor(
            f"{db}.{name}", docs, batch_size=None if batch_size is None else int(batch_size)
        )

    def _count(self, command: Doc, db: str, variables: Variables) -> Doc:
        collection = self._collection(db, command["count"])
        query = command.get("query") or {}
        if collection is not None and not query:
            total = len(collection.docs)
        else:
            total = sum(1 for _ in self._matching(collection, query, variables))
        total = max(total - _count_arg(command, "skip"), 0)
        limit = abs(_count_arg(command, "limit"))
        return {"n": min(total, limit) if limit else total, "ok": 1.0}

    def _distinct(self, command: Doc, db: str, variables: Variables) -> Doc:
        key = command.get("key")
        if not isinstance(key, str):
            raise CommandError(14, "'key' must be a string")
        parts = key.split(".")
        seen: dict[Any, Any] = {}
        docs = self._matching(
            self._collection(db, command["distinct"]), command.get("query"), variables
        )
        for doc in docs:
            for leaf in query_leaves(doc, parts):
                if leaf is MISSING:
                    continue
                for value in leaf if type(leaf) is list else [leaf]:
                    seen.setdefault(hkey(value), value)
        return {"values": list(seen.values()), "ok": 1.0}

    # -- writes ---------------------------------------------------------------------------

    def _insert(self, command: Doc, db: str, variables: Variables) -> Doc:
        collection = self._collection(db, command["insert"], create=True)
        assert collection is not None
        ordered = command.get("ordered", True)
        inserted = 0
        errors: list[Doc] = []
        for index, doc in enumerate(command.get("documents", [])):
            try:
                if type(doc.get("_id")) is list:
                    raise CommandError(53, "can't use an array for _id")
                collection.insert(doc)
                inserted += 1
            except CommandError as error:
                errors.append(error.write_error(index))
                if ordered:
                    break
        return _write_reply({"n": inserted}, errors)

    def _update(self, command: Doc, db: str, variables: Variables) -> Doc:
        collection = self._collection(db, command["update"], create=True)
        assert collection is not None
        ordered = command.get("ordered", True)
        matched = modified = 0
        upserted: list[Doc] = []
        errors: list[Doc] = []
        for index, statement in enumerate(command.get("updates", [])):
            scope = {**variables, **statement["c"]} if "c" in statement else variables
            try:
                found, changed, new_id_value = self._update_statement(collection, statement, scope)
            except CommandError as error:
                errors.append(error.write_error(index))
                if ordered:
                    break
                continue
            matched += found
            modified += changed
            if new_id_value is not MISSING:
                matched += 1
                upserted.append({"index": index, "_id": new_id_value})
        reply: Doc = {"n": matched, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        return _write_reply(reply, errors)

    def _update_statement(
        self, collection: Collection, statement: Doc, variables: Variables
    ) -> tuple[int, int, Any]:
        query = statement.get("q") or {}
        update = statement.get("u")
        multi = bool(statement.get("multi"))
        if statement.get("arrayFilters"):
            raise bad_value("the stand-in does not support arrayFilters")
        if multi and is_replacement(update):
            raise CommandError(9, "multi update is not supported for replacement-style update")
        matched = changed = 0
        test = compile_filter(query, variables)
        for rid, doc in collection.scan(query, test):
            new = apply_update(doc, update, variables)
            matched += 1
            if _differs(doc, new):
                collection.replace(rid, new)
                changed += 1
            if not multi:
                break
        if matched == 0 and statement.get("upsert"):
            doc = collection.insert(_upsert_document(query, update, variables))
            return 0, 0, doc["_id"]
        return matched, changed, MISSING

    def _delete(self, command: Doc, db: str, variables: Variables) -> Doc:
        collection = self._collection(db, command["delete"])
        ordered = command.get("ordered", True)
        deleted = 0
        errors: list[Doc] = []
        for index, statement in enumerate(command.get("deletes", [])):
            try:
                query = statement.get("q") or {}
                limit = _count_arg(statement, "limit")
                if limit not in (0, 1):
                    raise CommandError(9, "The limit field in delete objects must be 0 or 1.")
                if collection is None:
                    continue
                test = compile_filter(query, variables)
                for rid, _ in collection.scan(query, test):
                    collection.delete(rid)
                    deleted += 1
                    if limit == 1:
                        break
            except CommandError as error:
                errors.append(error.write_error(index))
                if ordered:
                    break
        return _write_reply({"n": deleted}, errors)

    def _find_and_modify(self, command: Doc, db: str, variables: Variables) -> Doc:
        name = next(iter(command))
        query = command.get("query") or {}
        update = command.get("update")
        remove = bool(command.get("remove"))
        upsert = bool(command.get("upsert"))
        if remove and update is not None:
            raise CommandError(9, "Cannot specify both an update and remove=true")
        if not remove and update is None:
            raise CommandError(9, "Either an update or remove=true must be specified")
        if remove and upsert:
            raise CommandError(9, "Cannot specify both upsert=true and remove=true")
        if command.get("arrayFilters"):
            raise bad_value("the stand-in does not support arrayFilters")
        collection = self._collection(db, command[name], create=not remove)
        found: tuple[int, Doc] | None = None
        if collection is not None:
            pairs = collection.scan(query, compile_filter(query, variables))
            if command.get("sort"):
                key = compile_sort(command["sort"])
                found = min(pairs, key=lambda pair: key(pair[1]), default=None)
            else:
                found = next(pairs, None)
        value: Doc | None = None
        last_error: Doc = {"n": 0}
        if remove:
            if found is not None and collection is not None:
                collection.delete(found[0])
                value, last_error = found[1], {"n": 1}
        else:
            assert collection is not None
            last_error["updatedExisting"] = found is not None
            if found is not None:
                rid, doc = found
                new = apply_update(doc, update, variables)
                if _differs(doc, new):
                    collection.replace(rid, new)
                value = new if command.get("new") else doc
                last_error["n"] = 1
            elif upsert:
                new = collection.insert(_upsert_document(query, update, variables))
                value = new if command.get("new") else None
                last_error.update({"n": 1, "upserted": new["_id"]})
        fields = command.get("fields")
        if value is not None and fields:
            value = Projection(fields, variables, find=True)(value)
        return {"lastErrorObject": last_error, "value": value, "ok": 1.0}

    # -- catalog --------------------------------------------------------------------------

    def _create_indexes(self, command: Doc, db: str, variables: Variables) -> Doc:
        specs = command.get("indexes")
        if type(specs) is not list or not specs:
            raise CommandError(2, "Must specify at least one index to create")
        created_collection = self._collection(db, command["createIndexes"]) is None
        collection = self._collection(db, command["createIndexes"], create=True)
        assert collection is not None
        before = len(collection.indexes)
        created = [collection.create_index(spec) for spec in specs]
        reply: Doc = {
            "numIndexesBefore": before,
            "numIndexesAfter": len(collection.indexes),
            "createdCollectionAutomatically": created_collection,
        }
        if not any(created):
            reply["note"] = "all indexes already exist"
        reply["ok"] = 1.0
        return reply

    def _list_indexes(self, command: Doc, db: str, variables: Variables) -> Doc:
        collection = self._collection(db, command["listIndexes"])
        if collection is None:
            raise CommandError(26, f"ns does not exist: {db}.{command['listIndexes']}")
        specs = [dict(index.spec) for index in collection.indexes.values()]
        batch_size = (command.get("cursor") or {}).get("batchSize")
        return self._open_cursor(
            f"{db}.{collection.name}",
            iter(specs),
            batch_size=None if batch_size is None else int(batch_size),
        )

    def _list_collections(self, command: Doc, db: str, variables: Variables) -> Doc:
        database = self.databases.get(db)
        collections = list(database.collections.values()) if database else []
        infos = []
        for collection in collections:
            info: Doc = {"name": collection.name, "type": "collection"}
            if not command.get("nameOnly"):
                info["options"] = dict(collection.options)
                info["info"] = {"readOnly": False, "uuid": Binary(collection.uuid.bytes, 4)}
                info["idIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
            infos.append(info)
        test = compile_filter(command.get("filter"), variables)
        batch_size = (command.get("cursor") or {}).get("batchSize")
        return self._open_cursor(
            f"{db}.$cmd.listCollections",
            (info for info in infos if test(info)),
            batch_size=None if batch_size is None else int(batch_size),
        )

    def _list_databases(self, command: Doc, db: str, variables: Variables) -> Doc:
        names = sorted(name for name, database in self.databases.items() if database.collections)
        if command.get("nameOnly"):
            return {"databases": [{"name": name} for name in names], "ok": 1.0}
        entries = [{"name": name, "sizeOnDisk": Int64(0), "empty": False} for name in names]
        return {"databases": entries, "totalSize": Int64(0), "totalSizeMb": Int64(0), "ok": 1.0}

    def _db_stats(self, command: Doc, db: str, variables: Variables) -> Doc:
        database = self.databases.get(db)
        collections = list(database.collections.values()) if database else []
        return {
            "db": db,
            "collections": len(collections),
            "objects": sum(len(collection.docs) for collection in collections),
            "indexes": sum(len(collection.indexes) for collection in collections),
            "ok": 1.0,
        }

    def _create(self, command: Doc, db: str, variables: Variables) -> Doc:
        name = command["create"]
        if "viewOn" in command:
            raise CommandError(115, "the stand-in does not support views")
        if self._collection(db, name) is not None:
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        collection = self._collection(db, name, create=True)
        assert collection is not None
        options = {
            key: value
            for key, value in command.items()
            if key != "create" and key not in GENERIC_FIELDS
        }
        collection.options.update(options)
        return {"ok": 1.0}

    def _drop(self, command: Doc, db: str, variables: Variables) -> Doc:
        database = self.databases.get(db)
        collection = database.collections.pop(command["drop"], None) if database else None
        if collection is None:
            return {"ok": 1.0}
        return {"nIndexesWas": len(collection.indexes), "ns": collection.namespace, "ok": 1.0}

    def _drop_database(self, command: Doc, db: str, variables: Variables) -> Doc:
        self.databases.pop(db, None)
        return {"ok": 1.0}

    def _drop_indexes(self, command: Doc, db: str, variables: Variables) -> Doc:
        name = next(iter(command))
        collection = self._collection(db, command[name])
        if collection is None:
            raise CommandError(26, f"ns not found {db}.{command[name]}")
        before = len(collection.indexes)
        target = command.get("index")
        if target == "*":
            names = [index for index in collection.indexes if index != "_id_"]
        elif isinstance(target, str):
            names = [target]
        elif isinstance(target, Mapping):
            names = [collection.find_index_by_key(target)]
        elif isinstance(target, list):
            names = list(target)
        else:
            raise bad_value("'index' must be a string, an object or an array of strings")
        for index_name in names:
            collection.drop_index(index_name)
        return {"nIndexesWas": before, "ok": 1.0}


# Fields any command may carry that are not its arguments (sessions, concerns, API version).
GENERIC_FIELDS: Final = frozenset(
    {
        "$db",
        "$clusterTime",
        "$readPreference",
        "lsid",
        "txnNumber",
        "readConcern",
        "writeConcern",
        "maxTimeMS",
        "comment",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    }
)


def _write_reply(reply: Doc, errors: list[Doc]) -> Doc:
    if errors:
        reply["writeErrors"] = errors
    reply["ok"] = 1.0
    return reply


def _differs(old: Doc, new: Doc) -> bool:
    """Whether an update changed the document, byte for byte as the server counts it.

    Stored documents are never changed in place, so a field holding the very same object in
    both is unchanged, and only the others are compared. The field names, in the order BSON
    writes them, must be the same."""
    if old is new:
        return False
    if _bson_order(old) != _bson_order(new):
        return True
    for name, value in new.items():
        before = old[name]
        if before is not value and not _same_bytes(before, value):
            return True
    return False


def _bson_order(doc: Doc) -> list[str]:
    """The field names as BSON writes a top-level document: ``_id`` first."""
    names = list(doc)
    if "_id" in doc and names[0] != "_id":
        names.remove("_id")
        names.insert(0, "_id")
    return names


# Types whose values encode to the same bytes exactly when they are equal (not floats: -0.0
# equals 0.0; nor dates: BSON keeps only milliseconds).
_PLAIN_TYPES: Final = frozenset({str, int, bool, Int64, ObjectId})


def _same_bytes(a: Any, b: Any) -> bool:
    kind = type(a)
    if kind is type(b) and kind in _PLAIN_TYPES:
        return bool(a == b)
    return bson.encode({"": a}) == bson.encode({"": b})


def _upsert_document(query: Any, update: Any, variables: Variables) -> Doc:
    seed = upsert_seed(query)
    if is_replacement(update):
        doc = dict(update)
        if "_id" not in doc and "_id" in seed:
            doc = {"_id": seed["_id"], **doc}
    else:
        doc = apply_update(seed, update, variables, inserting=True)
    if "_id" not in doc:
        doc = {"_id": new_id(), **doc}
    return doc
