"""Embedded provider: one SQLite table per collection, each row an id plus the JSON document.

Queried fields are reached with json_extract(doc, '$.field'); INDEXES become expression indexes
on exactly those expressions, so SQLite answers indexed queries with B-tree searches. Non-unique
indexes end with the id column, so "newest first, id breaks ties" pages come straight off the
index without a sort.

Threads: each thread gets its own connection (WAL lets readers run beside the writer); writes go
through one process-wide lock per database file, so in-process writers queue instead of hitting
SQLITE_BUSY, and BEGIN IMMEDIATE keeps read-modify-write updates atomic against other processes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from texium.core.caches import cached
from texium.core.datastore.base import (
    FIELD_NAME,
    INDEXES,
    Collection,
    Datastore,
    Filter,
    Index,
    Sort,
    check_collection_name,
    conditions,
    is_time_field,
    is_valid_id,
    new_id,
)
from texium.core.errors import DatastoreUnavailable, DuplicateKeyError
from texium.core.jsontext import Raw
from texium.core.timeutil import as_utc

# Field names are spliced into SQL (a bound JSON path would not match the index expressions).
_TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# sqlite3 errors that mean "the database cannot be used right now", not a bug in a query.
_UNAVAILABLE = ("unable to open", "disk i/o", "locked", "readonly", "full", "not a database", "malformed", "corrupt")

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: str) -> threading.RLock:
    """One lock per database file for the whole process, shared by every datastore on it."""
    with _write_locks_guard:
        return _write_locks.setdefault(path, threading.RLock())


def _index_name(table: str, index: Index) -> str:
    # SQLite index names are database-wide; Index.name is only unique within a collection.
    return f"ix_{table}__{index.name}"


_UNIQUE_FIELDS = {
    _index_name(table, index): index.fields[0]
    for table, indexes in INDEXES.items()
    for index in indexes
    if index.unique
}


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn sqlite3 errors into the core's errors."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        message = str(exc)
        if "UNIQUE" not in message:
            raise
        # "UNIQUE constraint failed: index 'ix_users__email_unique'" or "...: users.id"
        match = re.search(r"index '([^']+)'", message)
        if match:
            field = _UNIQUE_FIELDS.get(match.group(1))
        else:
            field = "_id" if message.endswith(".id") else None
        raise DuplicateKeyError(field) from exc
    except sqlite3.DatabaseError as exc:
        plain = isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
        if plain and any(phrase in str(exc).lower() for phrase in _UNAVAILABLE):
            raise DatastoreUnavailable(f"SQLite database {path} unavailable: {exc}") from exc
        raise


def _time_text(value: datetime) -> str:
    """Fixed-width UTC text, truncated to milliseconds as BSON does, so text order is time order."""
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat(timespec="microseconds")


def _stored(field: str, value: Any) -> Any:
    return _time_text(value) if isinstance(value, datetime) and is_time_field(field) else value


def _encode(doc: dict) -> str:
    body = {field: _stored(field, value) for field, value in doc.items() if field != "_id"}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


_is_time_field = cached(is_time_field)  # decoding is the hot path of find


def _decode(doc_id: str, text: str) -> dict:
    doc: dict[str, Any] = {"_id": doc_id}
    for field, value in json.loads(text).items():
        if type(value) is str and len(value) == 32 and _is_time_field(field) and _TIME_TEXT.match(value):
            value = datetime.fromisoformat(value)
        doc[field] = value
    return doc


# Row counts kept by triggers, so that the counts every list and the stats need are one lookup:
# (collection, '*') counts all rows; (collection, 'status=x') the rows of a COUNTED_BY field.
COUNTS = "_counts"
COUNTED_BY = {"scheduler_executions": "status"}


def _counter_key(collection: str, query: Filter | None) -> str | None:
    if not query:
        return "*"
    field = COUNTED_BY.get(collection)
    if field is not None and len(query) == 1 and type(query.get(field)) is str:
        return f"{field}={query[field]}"
    return None


def _create_counters(db: sqlite3.Connection, name: str) -> None:
    """Triggers that keep COUNTS right on every insert, delete and status change, by any
    connection or process; created (and the counts filled in) once, in the caller's
    transaction, so no write can fall between the count and the first trigger."""
    trigger = f"{name}__count_insert"
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?", (trigger,)).fetchone():
        return
    db.execute(
        f'CREATE TABLE IF NOT EXISTS "{COUNTS}" (collection TEXT NOT NULL, key TEXT NOT NULL, '
        "n INTEGER NOT NULL, PRIMARY KEY (collection, key))"
    )
    add = f"INSERT INTO \"{COUNTS}\" VALUES ('{name}', {{key}}, 1) ON CONFLICT DO UPDATE SET n = n + 1;"
    remove = f"UPDATE \"{COUNTS}\" SET n = n - 1 WHERE collection = '{name}' AND key = {{key}};"
    field = COUNTED_BY.get(name)
    keyed = (lambda row: f"'{field}=' || COALESCE(json_extract({row}.doc, '$.{field}'), '')") if field else None
    on_insert, on_delete = [add.format(key="'*'")], [remove.format(key="'*'")]
    db.execute(f"INSERT OR REPLACE INTO \"{COUNTS}\" SELECT '{name}', '*', COUNT(*) FROM \"{name}\"")
    if keyed:
        on_insert.append(add.format(key=keyed("NEW")))
        on_delete.append(remove.format(key=keyed("OLD")))
        db.execute(
            f'INSERT OR REPLACE INTO "{COUNTS}" SELECT \'{name}\', {keyed("t")}, COUNT(*) FROM "{name}" AS t GROUP BY 2'
        )
        db.execute(
            f'CREATE TRIGGER IF NOT EXISTS "{name}__count_update" AFTER UPDATE OF doc ON "{name}" '
            f"WHEN json_extract(OLD.doc, '$.{field}') IS NOT json_extract(NEW.doc, '$.{field}') BEGIN "
            f"{remove.format(key=keyed('OLD'))} {add.format(key=keyed('NEW'))} END"
        )
    db.execute(f'CREATE TRIGGER IF NOT EXISTS "{trigger}" AFTER INSERT ON "{name}" BEGIN {" ".join(on_insert)} END')
    db.execute(
        f'CREATE TRIGGER IF NOT EXISTS "{name}__count_delete" AFTER DELETE ON "{name}" BEGIN {" ".join(on_delete)} END'
    )


# Collections whose pages are cached as JSON text, invalidated by a version that triggers bump
# on every insert, update and delete, by any connection or process (another node included).
VERSIONED = ("scheduler_jobs", "users", "servers")
CACHED_PAGES = 16  # per collection


def _create_version(db: sqlite3.Connection, name: str) -> None:
    if name not in VERSIONED:
        return
    bump = f"INSERT INTO \"{COUNTS}\" VALUES ('{name}', 'version', 1) ON CONFLICT DO UPDATE SET n = n + 1;"
    for event in ("INSERT", "UPDATE", "DELETE"):
        db.execute(
            f'CREATE TRIGGER IF NOT EXISTS "{name}__version_{event.lower()}" AFTER {event} ON "{name}" BEGIN {bump} END'
        )


def _strip_last(text: str, field: str) -> str | None:
    """The document text without `field` when it is the last member and holds a plain string
    (how records keep their internal keys); None when it is not, and parsing must do."""
    start = text.rfind(f',"{field}":"')
    if start == -1:
        return None
    value_start = start + len(field) + 5
    if text.find('"', value_start) != len(text) - 2 or "\\" in text[value_start:]:
        return None
    return text[:start] + "}"


def _raw(doc_id: str, text: str, hidden: tuple[str, ...] = ()) -> Raw:
    """The stored text is the API form less `_id`: put the id first, decode nothing."""
    for field in hidden:
        if f'"{field}":' not in text:  # not in the document at all (a value would hold it escaped)
            continue
        stripped = _strip_last(text, field)
        if stripped is None:
            doc = json.loads(text)
            doc.pop(field, None)
            stripped = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        text = stripped
    return Raw(f'{{"_id":"{doc_id}"' + ("}" if text == "{}" else "," + text[1:]))


def _column(field: str) -> str:
    if field == "_id":
        return "id"
    if not FIELD_NAME.match(field):
        raise ValueError(f"invalid field name: {field!r}")
    return f"json_extract(doc, '$.{field}')"


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time_text(value)
    return value


def _equals(field: str, value: Any, negate: bool = False) -> tuple[str, list]:
    """`field == value`. The negated forms use IS NOT, which is never NULL, so `$ne` also matches
    documents where the field is missing, as in MongoDB."""
    column = _column(field)
    if value is None:
        return f"{column} IS {'NOT ' if negate else ''}NULL", []
    if isinstance(value, bool) and field != "_id":
        # json_extract gives 1/0 for true/false; json_type tells booleans from numbers.
        kind = "'true'" if value else "'false'"
        return f"json_type(doc, '$.{field}') {'IS NOT' if negate else '='} {kind}", []
    return f"{column} {'IS NOT' if negate else '='} ?", [_param(value)]


def _member(field: str, values: Any) -> tuple[str, list]:
    """`field IN values`, NULL-valued only when the field is null or missing."""

    # None and booleans need their own tests (see _equals); everything else fits one IN list.
    def special(v: Any) -> bool:
        return v is None or (isinstance(v, bool) and field != "_id")

    plain = [_param(v) for v in values if not special(v)]
    parts = [_equals(field, v)[0] for v in values if special(v)]
    if plain:
        parts.append(f"{_column(field)} IN ({', '.join('?' * len(plain))})")
    return (f"({' OR '.join(parts)})" if parts else "0"), plain


def _condition(field: str, op: str, value: Any) -> tuple[str, list]:
    if op == "$eq":
        return _equals(field, value)
    if op == "$ne":
        return _equals(field, value, negate=True)
    if op == "$in":
        return _member(field, value)
    if op == "$nin":
        sql, params = _member(field, value)
        return f"NOT COALESCE({sql}, 0)", params
    if op in _COMPARISONS:
        return f"{_column(field)} {_COMPARISONS[op]} ?", [_param(value)]
    raise ValueError(f"unsupported query operator: {op}")


def _where(query: Filter | None) -> tuple[str, list]:
    clauses, params = [], []
    for field, op, value in conditions(query):
        sql, args = _condition(field, op, value)
        clauses.append(sql)
        params.extend(args)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _order_by(sort: Sort | None) -> str:
    keys = list(sort or [("_id", 1)])
    if any(direction not in (1, -1) for _, direction in keys):
        raise ValueError("sort directions must be 1 or -1")
    if all(field != "_id" for field, _ in keys):
        keys.append(("_id", keys[-1][1]))
    return " ORDER BY " + ", ".join(f"{_column(f)} {'ASC' if d == 1 else 'DESC'}" for f, d in keys)


class SQLiteCollection(Collection):
    def __init__(self, store: SQLiteDatastore, name: str):
        self.name = name
        self._store = store
        self._table = f'"{name}"'
        self._pages: dict = {}  # (sql, params, hidden) -> (version, page) for VERSIONED collections
        self._pages_lock = threading.Lock()

    def _select(self, query: Filter | None, sort: Sort | None, limit: int | None, offset: int) -> tuple[str, list]:
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where, params = _where(query)
        sql = f"SELECT id, doc FROM {self._table}{where}{_order_by(sort)} LIMIT ? OFFSET ?"
        return sql, params + [-1 if limit is None else limit, offset]

    def find_json(
        self,
        query: Filter | None = None,
        sort: Sort | None = None,
        limit: int | None = None,
        offset: int = 0,
        hidden: tuple[str, ...] = (),
    ) -> list[Raw]:
        sql, params = self._select(query, sort, limit, offset)
        if self.name not in VERSIONED:
            return [_raw(doc_id, text, hidden) for doc_id, text in self._store._read(sql, params)]
        version = self._version()
        key = (sql, tuple(params), hidden)
        with self._pages_lock:
            cached = self._pages.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        page = [_raw(doc_id, text, hidden) for doc_id, text in self._store._read(sql, params)]
        with self._pages_lock:
            self._pages[key] = (version, page)
            while len(self._pages) > CACHED_PAGES:
                self._pages.pop(next(iter(self._pages)))
        return page

    def _version(self) -> int:
        rows = self._store._read(f"SELECT n FROM \"{COUNTS}\" WHERE collection = ? AND key = 'version'", [self.name])
        return rows[0][0] if rows else 0

    def get_json(self, doc_id: str, hidden: tuple[str, ...] = ()) -> Raw | None:
        if not is_valid_id(doc_id):
            return None
        rows = self._store._read(f"SELECT doc FROM {self._table} WHERE id = ?", [doc_id])
        return _raw(doc_id, rows[0][0], hidden) if rows else None

    def explain(self, query: Filter | None = None, sort: Sort | None = None, limit: int | None = None) -> list[str]:
        """SQLite's plan for a find, one line per step (tests use it to rule out table scans)."""
        sql, params = self._select(query, sort, limit, 0)
        return [row[3] for row in self._store._read("EXPLAIN QUERY PLAN " + sql, params)]

    def insert(self, doc: dict) -> str:
        doc_id = doc.get("_id") or new_id()
        if not is_valid_id(doc_id):
            raise ValueError("_id must be a 24-hex ObjectId string")
        body = _encode(doc)
        with self._store._write() as db:
            db.execute(f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", (doc_id, body))
        return doc_id

    def insert_many(self, docs: list[dict]) -> list[str]:
        rows = []
        for doc in docs:
            doc_id = doc.get("_id") or new_id()
            if not is_valid_id(doc_id):
                raise ValueError("_id must be a 24-hex ObjectId string")
            rows.append((doc_id, _encode(doc)))
        inserted = []
        with self._store._write() as db:
            for row in rows:  # OR IGNORE: a row that breaks a unique index is left out
                if db.execute(f"INSERT OR IGNORE INTO {self._table} (id, doc) VALUES (?, ?)", row).rowcount:
                    inserted.append(row[0])
        return inserted

    def get(self, doc_id: str) -> dict | None:
        if not is_valid_id(doc_id):
            return None
        rows = self._store._read(f"SELECT doc FROM {self._table} WHERE id = ?", [doc_id])
        return _decode(doc_id, rows[0][0]) if rows else None

    def find(
        self, query: Filter | None = None, sort: Sort | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        rows = self._store._read(*self._select(query, sort, limit, offset))
        return [_decode(doc_id, text) for doc_id, text in rows]

    def count(self, query: Filter | None = None) -> int:
        key = _counter_key(self.name, query)
        if key is not None:  # kept by triggers: O(1), not a walk over 100,000 index entries
            rows = self._store._read(f'SELECT n FROM "{COUNTS}" WHERE collection = ? AND key = ?', [self.name, key])
            return rows[0][0] if rows else 0
        where, params = _where(query)
        return self._store._read(f"SELECT COUNT(*) FROM {self._table}{where}", params)[0][0]

    def distinct(self, field: str, query: Filter | None = None) -> list:
        where, params = _where(query)
        return [
            value
            for (value,) in self._store._read(f"SELECT DISTINCT {_column(field)} FROM {self._table}{where}", params)
        ]

    def update(
        self, doc_id: str, fields: dict | None = None, inc: dict | None = None, unset: Iterable[str] = ()
    ) -> dict | None:
        fields, inc, unset = dict(fields or {}), dict(inc or {}), list(unset)
        if "_id" in fields or "_id" in inc or "_id" in unset:
            raise ValueError("_id cannot be changed")
        if not is_valid_id(doc_id):
            return None
        with self._store._write() as db:
            row = db.execute(f"SELECT doc FROM {self._table} WHERE id = ?", (doc_id,)).fetchall()
            if not row:
                return None
            doc = json.loads(row[0][0])
            doc.update(fields)
            for field, amount in inc.items():
                doc[field] = doc.get(field, 0) + amount
            for field in unset:
                doc.pop(field, None)
            body = _encode(doc)
            db.execute(f"UPDATE {self._table} SET doc = ? WHERE id = ?", (body, doc_id))
        return _decode(doc_id, body)

    def update_many(self, query: Filter, fields: dict, inc: dict | None = None) -> int:
        inc = dict(inc or {})
        if not fields and not inc:
            return self.count(query)
        if "_id" in fields or "_id" in inc:
            raise ValueError("_id cannot be changed")
        for field in (*fields, *inc):
            _column(field)
        paths = [f"'$.{field}', json(?)" for field in fields]
        values: list[Any] = [json.dumps(_stored(field, value), ensure_ascii=False) for field, value in fields.items()]
        for field, amount in inc.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise ValueError(f"increment of {field} must be a number")
            paths.append(f"'$.{field}', COALESCE({_column(field)}, 0) + ?")
            values.append(amount)
        where, params = _where(query)
        with self._store._write() as db:
            sql = f"UPDATE {self._table} SET doc = json_set(doc, {', '.join(paths)}){where}"
            return db.execute(sql, values + params).rowcount

    def delete(self, doc_id: str) -> bool:
        return is_valid_id(doc_id) and self.delete_many({"_id": doc_id}) == 1

    def delete_many(self, query: Filter) -> int:
        where, params = _where(query)
        with self._store._write() as db:
            return db.execute(f"DELETE FROM {self._table}{where}", params).rowcount


class SQLiteDatastore(Datastore):
    provider = "sqlite"
    inline_reads = True
    atomic_batches = True
    slot_documents = False  # the running records themselves, counted in the start's transaction

    def start_run(self, record: dict, condition: Filter, fields: dict, limit: int) -> str:
        """One write transaction: count the job's running records, then the conditional update."""
        executions = self.executions
        with self.batch():
            if executions.count({"job_id": record["job_id"], "status": "running"}) >= limit:
                return "busy"
            return "started" if executions.update_many(condition, fields) else "lost"

    def start_runs(self, starts: list[tuple[dict, Filter, dict, int]]) -> list[str]:
        """One statement per round, one start per job in each round: the conditions (status,
        holder, generation) and the count of the job's running records are checked by SQLite
        itself, row by row; RETURNING says which records started (SQLite 3.35; older ones
        decide one start at a time)."""
        if sqlite3.sqlite_version_info < (3, 35):
            return super().start_runs(starts)
        started: set[str] = set()
        alike: dict[str, list] = {}  # one statement sets one set of fields: starts grouped by theirs
        for start in starts:
            alike.setdefault(json.dumps(start[2], sort_keys=True, default=str), []).append(start)
        with self.batch(), self._write() as db:
            for pending in alike.values():
                while pending:
                    jobs: set[str] = set()
                    round_, later = [], []
                    for start in pending:
                        (later if start[0]["job_id"] in jobs else round_).append(start)
                        jobs.add(start[0]["job_id"])
                    started |= self._start_round(db, round_)
                    pending = later
            busy = self._still_waiting(db, [start for start in starts if start[0]["_id"] not in started])
        return [
            "started" if record["_id"] in started else "busy" if record["_id"] in busy else "lost"
            for record, _, _, _ in starts
        ]

    @staticmethod
    def _start_round(db: sqlite3.Connection, starts: list[tuple[dict, Filter, dict, int]]) -> set[str]:
        fields = starts[0][2]
        paths = ", ".join(f"'$.{field}', json(?)" for field in fields)
        values = [json.dumps(_stored(field, value), ensure_ascii=False) for field, value in fields.items()]
        rows = ", ".join("(?, ?, ?, ?)" for _ in starts)
        params: list[Any] = []
        for record, condition, _, limit in starts:
            params += [record["_id"], condition.get("node_id"), condition.get("generation"), limit]
        table = '"scheduler_executions"'
        sql = (
            f"UPDATE {table} AS e SET doc = json_set(e.doc, {paths}) FROM (VALUES {rows}) AS v "
            "WHERE e.id = v.column1 AND json_extract(e.doc, '$.status') = 'scheduled' "
            "AND json_extract(e.doc, '$.node_id') IS v.column2 AND json_extract(e.doc, '$.generation') IS v.column3 "
            f"AND (SELECT COUNT(*) FROM {table} AS r WHERE json_extract(r.doc, '$.job_id') = "
            "json_extract(e.doc, '$.job_id') AND json_extract(r.doc, '$.status') = 'running') < v.column4 "
            "RETURNING id"
        )
        return {row[0] for row in db.execute(sql, values + params).fetchall()}

    @staticmethod
    def _still_waiting(db: sqlite3.Connection, starts: list[tuple[dict, Filter, dict, int]]) -> set[str]:
        """The records of `starts` still scheduled and held as they were: refused for the limit."""
        if not starts:
            return set()
        marks = ", ".join("?" * len(starts))
        rows = db.execute(
            "SELECT id, json_extract(doc, '$.node_id'), json_extract(doc, '$.generation') "
            f"FROM \"scheduler_executions\" WHERE id IN ({marks}) AND json_extract(doc, '$.status') = 'scheduled'",
            [record["_id"] for record, _, _, _ in starts],
        ).fetchall()
        held = {
            (record["_id"], condition.get("node_id"), condition.get("generation")) for record, condition, _, _ in starts
        }
        return {row[0] for row in rows if tuple(row) in held}

    def release_run(self, record: dict) -> None:
        """Nothing to give back: a run stops counting when its record stops being `running`."""

    def __init__(self, data_dir: str):
        from texium.core.security import files

        # Owner-only whatever the umask: a new data directory 0700, the database, its WAL and
        # shared-memory files 0600 (SQLite gives -wal/-shm the database file's mode).
        self.path = os.path.abspath(os.path.join(data_dir, "texium.db"))
        try:
            files.private_dir(data_dir)
            files.create_private_file(self.path)
            for path in (self.path, self.path + "-wal", self.path + "-shm"):
                files.restrict_file(path)
        except OSError as exc:
            raise DatastoreUnavailable(f"cannot create data directory {data_dir}: {exc.strerror or exc}") from exc
        self._lock = _write_lock(self.path)
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._collections: dict[str, SQLiteCollection] = {}
        with self._write(transaction=False) as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent in the file; cannot run inside BEGIN
        self.ensure_indexes()

    # -- connections -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # Autocommit mode (isolation_level=None): transactions are the explicit BEGINs below.
            # check_same_thread=False only so close() can close it from another thread.
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")
            with self._connections_lock:
                self._close_orphans()
                self._connections.append((threading.current_thread(), db))
            self._local.db = db
        return db

    def _close_orphans(self) -> None:
        """Close connections of threads that have ended, so short-lived threads do not leak them."""
        for thread, db in [entry for entry in self._connections if not entry[0].is_alive()]:
            db.close()
            self._connections.remove((thread, db))

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with _translated(self.path):
            return self._connection().execute(sql, list(params)).fetchall()

    @contextmanager
    def _write(self, transaction: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            db = self._connection()
            if not transaction or getattr(self._local, "batch", False):
                yield db  # inside batch() the outer transaction commits or rolls back
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise
            db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One IMMEDIATE transaction for every write this thread makes inside (see Datastore)."""
        if getattr(self._local, "batch", False):
            yield
            return
        with self._write():
            self._local.batch = True
            try:
                yield
            finally:
                self._local.batch = False

    # -- collections -------------------------------------------------------------------------

    def collection(self, name: str) -> SQLiteCollection:
        found = self._collections.get(name)
        if found is not None:
            return found
        check_collection_name(name)
        with self._write() as db:
            self._create(db, name)
            return self._collections.setdefault(name, SQLiteCollection(self, name))

    @staticmethod
    def _create(db: sqlite3.Connection, name: str) -> None:
        db.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (id TEXT PRIMARY KEY, doc TEXT NOT NULL)')
        _create_counters(db, name)
        _create_version(db, name)
        for index in INDEXES.get(name, ()):
            indexed = [f"json_type(doc, '$.{field}')" if index.boolean else _column(field) for field in index.fields]
            columns = indexed + ([] if index.unique else ["id"])
            db.execute(
                f"CREATE {'UNIQUE ' if index.unique else ''}INDEX IF NOT EXISTS "
                f'"{_index_name(name, index)}" ON "{name}" ({", ".join(columns)})'
            )

    def collection_names(self) -> list[str]:
        rows = self._read(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND substr(name, 1, 1) != '_' ORDER BY name"  # _counts is the provider's own
        )
        return [name for (name,) in rows]

    # -- housekeeping ------------------------------------------------------------------------

    def ping(self) -> None:
        self._read("SELECT COUNT(*) FROM sqlite_master")  # SELECT 1 would not touch the file

    def describe(self) -> str:
        return f"SQLite at {self.path}"

    def ensure_indexes(self) -> None:
        with self._write() as db:
            for name in INDEXES:
                self._create(db, name)
                self._collections.setdefault(name, SQLiteCollection(self, name))

    def rebuild_indexes(self) -> list[str]:
        rebuilt = []
        with self._write() as db:
            for name, indexes in INDEXES.items():
                for index in indexes:
                    db.execute(f'DROP INDEX IF EXISTS "{_index_name(name, index)}"')
                    rebuilt.append(f"{name}.{index.name}")
                self._create(db, name)
        return rebuilt

    def optimize(self) -> str:
        with self._write(transaction=False) as db:
            db.execute("ANALYZE")
            db.execute("PRAGMA optimize")
        return f"ANALYZE: planner statistics refreshed for {len(self.collection_names())} tables"

    def vacuum(self) -> str:
        before = self.size_bytes()
        with self._write(transaction=False) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM's pages land in the WAL first
        return f"VACUUM: {before / 1e6:.1f} MB -> {self.size_bytes() / 1e6:.1f} MB"

    def size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def close(self) -> None:
        with self._connections_lock:
            for _, db in self._connections:
                db.close()
            self._connections.clear()
            self._local = threading.local()
