"""MongoDB provider through pymongo; `mongomock://` gives an in-memory MongoDB for tests and demos.

Documents keep a real ObjectId `_id` in the database; this layer speaks 24-hex strings, so
clients cannot tell it from the SQLite provider. Indexes are created per collection on first
use (not in the constructor: pymongo connects lazily, and describe() must work with no server).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import ConfigurationError, ConnectionFailure, OperationFailure

from texium.core.datastore.base import (
    INDEXES,
    Collection,
    Datastore,
    Filter,
    Index,
    Sort,
    check_collection_name,
    conditions,
    is_valid_id,
    new_id,
)
from texium.core.errors import DatastoreUnavailable, DuplicateKeyError
from texium.core.timeutil import as_utc

MOCK_SCHEME = "mongomock://"
_AUTH_FAILED = (13, 18)  # Unauthorized, AuthenticationFailed: the server is unusable with this URI
_NAMESPACE_NOT_FOUND = 26
_INDEX_NOT_FOUND = 27
_REBUILDING = "_rebuilding"  # suffix of the temporary unique index rebuild_indexes builds first


def _oid(value: Any) -> Any:
    """ObjectId for a valid id string; anything else stays as is and so matches nothing."""
    return ObjectId(value) if is_valid_id(value) else value


def _keys(index: Index) -> list[tuple[str, int]]:
    # Non-unique indexes end with _id so "sort by created_at, _id breaks ties" is an index walk.
    fields = index.fields if index.unique else index.fields + ("_id",)
    return [(field, pymongo.ASCENDING) for field in fields]


def _query(query: Filter | None) -> dict:
    """The checked query (see base.conditions) as a MongoDB query, `_id` as ObjectId."""
    found: dict = {}
    for field, op, value in conditions(query):
        if op in ("$in", "$nin"):
            value = [_oid(v) for v in value] if field == "_id" else list(value)
        elif field == "_id":
            value = _oid(value)
        if op == "$eq":
            found[field] = value
        else:
            found.setdefault(field, {})[op] = value
    return found


def _sort(sort: Sort | None) -> list[tuple[str, int]]:
    keys = list(sort or [("_id", 1)])
    if any(direction not in (1, -1) for _, direction in keys):
        raise ValueError("sort directions must be 1 or -1")
    if all(field != "_id" for field, _ in keys):
        keys.append(("_id", keys[-1][1]))
    return keys


def _to_client(doc: dict) -> dict:
    """String id first, every top-level datetime aware UTC (timezone.utc, not bson's FixedOffset)."""
    out: dict[str, Any] = {"_id": str(doc["_id"])}
    for field, value in doc.items():
        if field != "_id":
            out[field] = as_utc(value) if isinstance(value, datetime) else value
    return out


def _duplicate_field(exc: pymongo.errors.DuplicateKeyError, collection: str, written: Iterable[str]) -> str | None:
    """Name the field of the broken unique index: from the server's details, else the index name
    in the message, else (mongomock says neither) the one unique field that was written."""
    pattern = (exc.details or {}).get("keyPattern")
    if pattern:
        return next(iter(pattern))
    unique = {index.name: index.fields[0] for index in INDEXES.get(collection, ()) if index.unique}
    match = re.search(r"index: (\S+)", str(exc))
    if match:
        return "_id" if match.group(1) == "_id_" else unique.get(match.group(1))
    candidates = [field for field in unique.values() if field in written]
    return candidates[0] if len(candidates) == 1 else "_id" if not candidates else None


def _hosts(uri: str) -> str:
    """host:port list of a mongodb:// URI, without credentials (plain text parsing: no DNS)."""
    scheme, _, rest = uri.partition("://")
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if scheme == "mongodb":
        hosts = ",".join(h if re.search(r":\d+$", h) else f"{h}:27017" for h in hosts.split(","))
    return hosts


class MongoCollection(Collection):
    def __init__(self, store: MongoDatastore, name: str):
        self.name = name
        self._store = store
        self._coll = store._db[name]

    def insert(self, doc: dict) -> str:
        doc = dict(doc)
        doc_id = doc.get("_id") or new_id()
        if not is_valid_id(doc_id):
            raise ValueError("_id must be a 24-hex ObjectId string")
        doc["_id"] = ObjectId(doc_id)
        with self._store._guard(self.name, doc):
            self._coll.insert_one(doc)
        return doc_id

    def get(self, doc_id: str) -> dict | None:
        if not is_valid_id(doc_id):
            return None
        with self._store._guard(self.name):
            doc = self._coll.find_one({"_id": ObjectId(doc_id)})
        return _to_client(doc) if doc else None

    def find(
        self, query: Filter | None = None, sort: Sort | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError("limit and offset must not be negative")
        query, keys = _query(query), _sort(sort)
        if limit == 0:  # pymongo reads limit=0 as "no limit"
            return []
        with self._store._guard(self.name):
            docs = list(self._coll.find(query, sort=keys, skip=offset, limit=limit or 0))
        return [_to_client(doc) for doc in docs]

    def count(self, query: Filter | None = None) -> int:
        query = _query(query)
        with self._store._guard(self.name):
            return self._coll.count_documents(query)

    def distinct(self, field: str, query: Filter | None = None) -> list:
        query = _query(query)
        with self._store._guard(self.name):
            values = self._coll.distinct(field, query)
        return [str(value) if isinstance(value, ObjectId) else value for value in values]

    def update(
        self, doc_id: str, fields: dict | None = None, inc: dict | None = None, unset: Iterable[str] = ()
    ) -> dict | None:
        changes = {"$set": dict(fields or {}), "$inc": dict(inc or {}), "$unset": dict.fromkeys(unset, "")}
        if any("_id" in fields for fields in changes.values()):
            raise ValueError("_id cannot be changed")
        if not is_valid_id(doc_id):
            return None
        changes = {op: fields for op, fields in changes.items() if fields}
        if not changes:  # MongoDB rejects an empty update
            return self.get(doc_id)
        with self._store._guard(self.name, changes.get("$set", ())):
            doc = self._coll.find_one_and_update(
                {"_id": ObjectId(doc_id)}, changes, return_document=ReturnDocument.AFTER
            )
        return _to_client(doc) if doc else None

    def update_many(self, query: Filter, fields: dict, inc: dict | None = None) -> int:
        changes = {"$set": dict(fields), "$inc": dict(inc or {})}
        if any("_id" in values for values in changes.values()):
            raise ValueError("_id cannot be changed")
        changes = {op: values for op, values in changes.items() if values}
        if not changes:
            return self.count(query)
        query = _query(query)
        with self._store._guard(self.name, fields):
            return self._coll.update_many(query, changes).matched_count

    def delete(self, doc_id: str) -> bool:
        if not is_valid_id(doc_id):
            return False
        with self._store._guard(self.name):
            return self._coll.delete_one({"_id": ObjectId(doc_id)}).deleted_count == 1

    def delete_many(self, query: Filter) -> int:
        query = _query(query)
        with self._store._guard(self.name):
            return self._coll.delete_many(query).deleted_count


class MongoDatastore(Datastore):
    provider = "mongodb"

    def __init__(self, uri: str, db_name: str):
        self._uri, self._db_name = uri, db_name
        self._mock = uri.startswith(MOCK_SCHEME)
        if self._mock:
            import mongomock

            self._client = mongomock.MongoClient(tz_aware=True)
        else:
            try:
                # Majority write concern and retryable writes: a claimed occurrence or a state change
                # acknowledged here survives a primary stepping down, and a write retried across the
                # failover hits the unique occurrence index instead of running a firing twice.
                self._client = pymongo.MongoClient(
                    uri, tz_aware=True, serverSelectionTimeoutMS=5000, w="majority", retryWrites=True
                )
            except ConfigurationError as exc:
                raise DatastoreUnavailable(f"invalid MongoDB URI: {exc}") from exc
        self._db = self._client[db_name]
        # mongomock has no locking of its own (find_one_and_update reads, then writes), so every
        # call on it is serialised; a real server needs none of that.
        self._lock = threading.RLock() if self._mock else nullcontext()
        self._collections: dict[str, MongoCollection] = {}
        self._collections_lock = threading.Lock()

    @contextmanager
    def _guard(self, collection: str = "", written: Iterable[str] = ()) -> Iterator[None]:
        """Serialise mongomock calls and turn pymongo errors into the core's errors."""
        with self._lock:
            try:
                yield
            except pymongo.errors.DuplicateKeyError as exc:
                raise DuplicateKeyError(_duplicate_field(exc, collection, written)) from exc
            except ConnectionFailure as exc:  # also ServerSelectionTimeoutError, AutoReconnect
                detail = f"{self.describe()} is unreachable ({type(exc).__name__})"
                raise DatastoreUnavailable(detail) from exc
            except OperationFailure as exc:
                if exc.code in _AUTH_FAILED:
                    raise DatastoreUnavailable(f"{self.describe()} refused the credentials") from exc
                raise

    def collection(self, name: str) -> MongoCollection:
        found = self._collections.get(name)
        if found is not None:
            return found
        check_collection_name(name)
        with self._collections_lock:
            if name not in self._collections:
                self._create_indexes(name)
                self._collections[name] = MongoCollection(self, name)
            return self._collections[name]

    def _create_indexes(self, name: str) -> list[str]:
        coll = self._db[name]
        with self._guard(name):
            for index in INDEXES.get(name, ()):
                # sparse: documents without the field do not collide, as with SQLite's NULLs.
                options = {"unique": True, "sparse": True} if index.unique else {}
                coll.create_index(_keys(index), name=index.name, **options)
        return [f"{name}.{index.name}" for index in INDEXES.get(name, ())]

    def collection_names(self) -> list[str]:
        with self._guard():
            return sorted(self._db.list_collection_names())

    def ping(self) -> None:
        with self._guard():
            self._client.admin.command("ping")

    def describe(self) -> str:
        if self._mock:
            return f"MongoDB (mongomock, in memory) {self._db_name}"
        return f"MongoDB at {_hosts(self._uri)}/{self._db_name}"

    def ensure_indexes(self) -> None:
        for name in INDEXES:
            self.collection(name)

    def rebuild_indexes(self) -> list[str]:
        """Rebuild every index of INDEXES with no moment where a unique one is missing.

        Dropping all indexes and creating them again (drop_indexes) leaves a window in which a
        duplicate email or occurrence_key gets in, and the next start-up's ensure_indexes then
        fails. So non-unique indexes are dropped and recreated, while a unique index is first
        duplicated by a temporary unique index on the same field (descending: MongoDB refuses two
        indexes with the same key pattern), then dropped, recreated and the temporary one dropped.
        Unique indexes that INDEXES does not declare are left alone.
        """
        rebuilt = []
        for name, indexes in INDEXES.items():
            coll = self._db[name]
            with self._guard(name):
                existing = coll.index_information()
            wanted = {index.name: index for index in indexes}
            for index_name, info in existing.items():
                if index_name not in wanted and index_name != "_id_" and not info.get("unique"):
                    self._drop_index(name, index_name)  # an older version's; rebuilding drops it
            for index in indexes:
                if index.unique:
                    self._rebuild_unique(name, index, existing)
                else:
                    if index.name in existing:
                        self._drop_index(name, index.name)
                    self._create_index(name, index)
                rebuilt.append(f"{name}.{index.name}")
        return rebuilt

    def _create_index(
        self, collection: str, index: Index, *, name: str | None = None, keys: list[tuple[str, int]] | None = None
    ) -> None:
        # sparse: documents without the field do not collide, as with SQLite's NULLs (as _create_indexes).
        options = {"unique": True, "sparse": True} if index.unique else {}
        with self._guard(collection):
            self._db[collection].create_index(keys or _keys(index), name=name or index.name, **options)

    def _drop_index(self, collection: str, index_name: str) -> None:
        try:
            with self._guard(collection):
                self._db[collection].drop_index(index_name)
        except OperationFailure as exc:
            if exc.code not in (_NAMESPACE_NOT_FOUND, _INDEX_NOT_FOUND):  # already gone
                raise

    def _rebuild_unique(self, collection: str, index: Index, existing: dict) -> None:
        """Recreate a unique index while a temporary one enforces the same uniqueness."""
        temporary = index.name + _REBUILDING
        if index.name in existing:
            self._create_index(
                collection,
                index,
                name=temporary,  # (or the one a broken rebuild left)
                keys=[(field, pymongo.DESCENDING) for field in index.fields],
            )
            self._drop_index(collection, index.name)
        # Raises DuplicateKeyError if duplicates are in the collection (no unique index guarded it).
        self._create_index(collection, index)
        if index.name in existing or temporary in existing:
            self._drop_index(collection, temporary)

    def _command_each(self, command: str) -> tuple[int, int, str]:
        """Run `command` on every collection; (succeeded, total, last refusal)."""
        names, done, refusal = self.collection_names(), 0, ""
        for name in names:
            try:
                with self._guard(name):
                    self._db.command({command: name})
                done += 1
            except (OperationFailure, NotImplementedError) as exc:
                refusal = str(exc).splitlines()[0][:120]
        return done, len(names), refusal

    def optimize(self) -> str:
        # MongoDB keeps its statistics itself; clearing cached plans makes it re-plan with them.
        done, total, refusal = self._command_each("planCacheClear")
        summary = f"planCacheClear: {done} of {total} collections"
        return summary + (f" (not supported: {refusal})" if refusal else "")

    def vacuum(self) -> str:
        done, total, refusal = self._command_each("compact")
        summary = f"compact: {done} of {total} collections"
        return summary + (f" (not permitted: {refusal})" if refusal else "")

    def size_bytes(self) -> int:
        try:
            with self._guard():
                stats = self._db.command("dbStats")
        except (OperationFailure, NotImplementedError):
            return 0
        return int(stats.get("dataSize", 0) + stats.get("indexSize", 0))

    def close(self) -> None:
        self._client.close()
