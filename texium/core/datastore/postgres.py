"""PostgreSQL provider: one table per collection, each row an id plus the document as jsonb.

Queried fields are reached as NULLIF(doc->'field', 'null'): JSON null and a missing field are
both SQL NULL, as json_extract makes them in SQLite, so equality with None, `$ne`, unique
indexes (several documents without the field) and sorting (no value first) behave the same on
both engines. INDEXES become expression indexes on exactly those expressions, NULLS FIRST, with
the id last (non-unique ones), so "newest first, id breaks ties" pages walk an index.
Times are the fixed-width ISO text SQLite stores (texium.core.datastore.jsondoc).

Connections come from a psycopg-pool pool in autocommit mode: each write is its own short
transaction; batch() holds one connection and one transaction for the thread's writes inside.
Starting a run takes a transaction-scoped advisory lock on the job for one statement, never
across a run.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

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
    is_valid_id,
    new_id,
    slot_of,
)
from texium.core.datastore.jsondoc import decode, encode, stored, time_text
from texium.core.errors import DatastoreUnavailable, DuplicateKeyError
from texium.core.jsontext import Raw

SCHEMA_TABLE = "texium_schema"
SCHEMA_VERSION = 1  # raise with each change of tables or indexes, and migrate from the one before
_SCHEMA_LOCK = 0x7E7107  # advisory lock key: one node creates or migrates the schema at a time
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# A \u0000 escape (after an even run of backslashes, so not an escaped backslash before "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _jsonb_text(text: str) -> str:
    """JSON text jsonb accepts: it has no NUL character, so one (a script's output may hold
    them) becomes U+FFFD, the replacement character, instead of failing the write."""
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def _index_name(table: str, index: Index) -> str:
    """Index names are schema-wide and at most 63 bytes: long ones end with a short hash."""
    name = f"ix_{table}__{index.name}"
    if len(name) > 63:
        name = name[:54] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


_UNIQUE_FIELDS = {
    _index_name(table, index): index.fields[0]
    for table, indexes in INDEXES.items()
    for index in indexes
    if index.unique
}


def _column(field: str, alias: str = "") -> str:
    if field == "_id":
        return f"{alias}id"
    if not FIELD_NAME.match(field):
        raise ValueError(f"invalid field name: {field!r}")
    return f"NULLIF({alias}doc->'{field}', 'null'::jsonb)"


def _value(field: str, value: Any) -> Any:
    """A query value as the parameter its column compares with."""
    if field == "_id":
        return None if value is None else str(value)
    return Jsonb(time_text(value) if isinstance(value, datetime) else value)


def _condition(field: str, op: str, value: Any) -> tuple[str, list]:
    column = _column(field)
    if op in ("$eq", "$ne"):
        if value is None:
            return f"{column} IS {'NOT ' if op == '$ne' else ''}NULL", []
        # IS DISTINCT FROM is never NULL: `$ne` also matches documents without the field.
        return f"{column} {'=' if op == '$eq' else 'IS DISTINCT FROM'} %s", [_value(field, value)]
    if op in ("$in", "$nin"):
        plain = [_value(field, v) for v in value if v is not None]
        parts = [f"{column} IS NULL"] if any(v is None for v in value) else []
        if plain:
            parts.append(f"{column} IN ({', '.join(['%s'] * len(plain))})")
        sql = f"({' OR '.join(parts)})" if parts else "false"
        return (sql if op == "$in" else f"NOT COALESCE({sql}, false)"), plain
    if op in _COMPARISONS:
        return f"{column} {_COMPARISONS[op]} %s", [_value(field, value)]
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
    # No value sorts first, as in SQLite and MongoDB (and as the indexes are built).
    order = {1: "ASC NULLS FIRST", -1: "DESC NULLS LAST"}
    plain = {1: "ASC", -1: "DESC"}  # the id is never NULL, and the indexes end with it plain
    return " ORDER BY " + ", ".join(f"{_column(f)} {(plain if f == '_id' else order)[d]}" for f, d in keys)


def _raw(doc_id: str, text: str) -> Raw:
    """jsonb's text with the id put first; nothing decoded."""
    return Raw(f'{{"_id":"{doc_id}"' + ("}" if text == "{}" else ", " + text[1:]))


def _changes(fields: dict, inc: dict, unset: Iterable[str] = ()) -> tuple[str, list]:
    """The new document as an expression of `doc`: fields set, numbers added, fields removed."""
    for field in (*fields, *inc, *unset):
        if field == "_id":
            raise ValueError("_id cannot be changed")
        _column(field)
    expression, params = "doc", []
    if fields:
        expression = f"({expression} || %s::jsonb)"
        params.append(_jsonb_text(json.dumps({f: stored(f, v) for f, v in fields.items()}, ensure_ascii=False)))
    for field, amount in inc.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ValueError(f"increment of {field} must be a number")
        expression = (
            f"jsonb_set({expression}, '{{{field}}}', to_jsonb(COALESCE((doc->>'{field}')::numeric, 0) + %s::numeric))"
        )
        params.append(amount)
    unset = list(unset)
    if unset:
        expression = f"({expression} - %s::text[])"
        params.append(unset)
    return expression, params


def describe_url(url: str) -> str:
    """user@host:port/database of a connection URL, without its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable DATABASE_URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"PostgreSQL at {user}{host}{port}/{parts.get('dbname', '')}"


class PostgresCollection(Collection):
    def __init__(self, store: PostgresDatastore, name: str):
        self.name = name
        self._store = store
        self._table = f'"{name}"'

    def _select(
        self, what: str, query: Filter | None, sort: Sort | None, limit: int | None, offset: int
    ) -> tuple[str, list]:
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where, params = _where(query)
        return f"SELECT id, {what} FROM {self._table}{where}{_order_by(sort)} LIMIT %s OFFSET %s", params + [
            limit,
            offset,
        ]

    def find(
        self, query: Filter | None = None, sort: Sort | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        rows = self._store._read(*self._select("doc::text", query, sort, limit, offset))
        return [decode(doc_id, text) for doc_id, text in rows]

    def find_json(
        self,
        query: Filter | None = None,
        sort: Sort | None = None,
        limit: int | None = None,
        offset: int = 0,
        hidden: tuple[str, ...] = (),
    ) -> list[Raw]:
        sql, params = self._select("(doc - %s::text[])::text", query, sort, limit, offset)
        return [_raw(doc_id, text) for doc_id, text in self._store._read(sql, [list(hidden), *params])]

    def get(self, doc_id: str) -> dict | None:
        if not is_valid_id(doc_id):
            return None
        rows = self._store._read(f"SELECT doc::text FROM {self._table} WHERE id = %s", [doc_id])
        return decode(doc_id, rows[0][0]) if rows else None

    def get_json(self, doc_id: str, hidden: tuple[str, ...] = ()) -> Raw | None:
        if not is_valid_id(doc_id):
            return None
        sql = f"SELECT (doc - %s::text[])::text FROM {self._table} WHERE id = %s"
        rows = self._store._read(sql, [list(hidden), doc_id])
        return _raw(doc_id, rows[0][0]) if rows else None

    def count(self, query: Filter | None = None) -> int:
        where, params = _where(query)
        return self._store._read(f"SELECT count(*) FROM {self._table}{where}", params)[0][0]

    def distinct(self, field: str, query: Filter | None = None) -> list:
        where, params = _where(query)
        rows = self._store._read(f"SELECT DISTINCT {_column(field)} FROM {self._table}{where}", params)
        return [value for (value,) in rows]

    @staticmethod
    def _new_row(doc: dict) -> tuple[str, str]:
        doc_id = doc.get("_id") or new_id()
        if not is_valid_id(doc_id):
            raise ValueError("_id must be a 24-hex ObjectId string")
        return doc_id, _jsonb_text(encode(doc))

    def insert(self, doc: dict) -> str:
        # ON CONFLICT DO NOTHING rather than an error: inside a batch an error would abort the
        # whole transaction, and the caller may well go on after a DuplicateKeyError.
        doc_id, body = self._new_row(doc)
        sql = f"INSERT INTO {self._table} (id, doc) VALUES (%s, %s::jsonb) ON CONFLICT DO NOTHING RETURNING id"
        if not self._store._write(sql, [doc_id, body]):
            raise DuplicateKeyError(self._conflicting_field(doc_id, doc))
        return doc_id

    def insert_many(self, docs: list[dict]) -> list[str]:
        if not docs:
            return []
        rows = [self._new_row(doc) for doc in docs]
        values = ", ".join(["(%s, %s::jsonb, %s)"] * len(rows))
        params = [value for n, (doc_id, body) in enumerate(rows) for value in (doc_id, body, n)]
        # One statement; a row that breaks a unique index is left out (a later one of the same
        # batch included: the ids come back in the order given).
        sql = (
            f"INSERT INTO {self._table} (id, doc) SELECT v.id, v.doc FROM (VALUES {values}) AS v(id, doc, n) "
            "ORDER BY v.n ON CONFLICT DO NOTHING RETURNING id"
        )
        inserted = {doc_id for (doc_id,) in self._store._write(sql, params)}
        return [doc_id for doc_id, _ in rows if doc_id in inserted]

    def _conflicting_field(self, doc_id: str, doc: dict) -> str | None:
        """Which unique key an insert that was refused broke: the id, else a unique field."""
        if self._store._read(f"SELECT 1 FROM {self._table} WHERE id = %s", [doc_id]):
            return "_id"
        for index in INDEXES.get(self.name, ()):
            field = index.fields[0]
            if index.unique and doc.get(field) is not None and self.count({field: doc[field]}):
                return field
        return None

    def update(
        self, doc_id: str, fields: dict | None = None, inc: dict | None = None, unset: Iterable[str] = ()
    ) -> dict | None:
        expression, params = _changes(dict(fields or {}), dict(inc or {}), unset)
        if not is_valid_id(doc_id):
            return None
        sql = f"UPDATE {self._table} SET doc = {expression} WHERE id = %s RETURNING doc::text"
        rows = self._store._write(sql, [*params, doc_id], savepoint=True)
        return decode(doc_id, rows[0][0]) if rows else None

    def update_many(self, query: Filter, fields: dict, inc: dict | None = None) -> int:
        inc = dict(inc or {})
        if not fields and not inc:
            return self.count(query)
        expression, params = _changes(dict(fields), inc)
        where, where_params = _where(query)
        return self._store._execute(
            f"UPDATE {self._table} SET doc = {expression}{where}", [*params, *where_params], savepoint=True
        )

    def delete(self, doc_id: str) -> bool:
        return is_valid_id(doc_id) and self.delete_many({"_id": doc_id}) == 1

    def delete_many(self, query: Filter) -> int:
        where, params = _where(query)
        return self._store._execute(f"DELETE FROM {self._table}{where}", params)


class PostgresDatastore(Datastore):
    provider = "postgresql"
    atomic_batches = True
    slot_documents = False  # the running records themselves, counted under the job's lock

    def __init__(self, url: str, pool_size: int = 10, connect_timeout: float = 5.0):
        self._url = url
        self._local = threading.local()
        self._collections: dict[str, PostgresCollection] = {}
        self._collections_lock = threading.Lock()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            timeout=connect_timeout,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            raise DatastoreUnavailable(f"{self.describe()} is unreachable ({type(exc).__name__})") from exc
        self._create_schema()

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """The thread's batch connection, else one from the pool; driver errors become the core's."""
        try:
            held = getattr(self._local, "conn", None)
            if held is not None:
                yield held
                return
            with self._pool.connection() as conn:
                yield conn
        except pg_errors.UniqueViolation as exc:
            name = exc.diag.constraint_name or ""
            raise DuplicateKeyError("_id" if name.endswith("_pkey") else _UNIQUE_FIELDS.get(name)) from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DatastoreUnavailable(f"{self.describe()} is unavailable ({type(exc).__name__})") from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, list(params)).fetchall()

    @contextmanager
    def _statement(self, savepoint: bool) -> Iterator[psycopg.Connection]:
        """A connection to write on; inside a batch, a statement that may break a unique index
        runs in a savepoint so that the error does not abort the batch's transaction."""
        with self._connection() as conn:
            if savepoint and getattr(self._local, "conn", None) is conn:
                with conn.transaction():
                    yield conn
            else:
                yield conn

    def _write(self, sql: str, params: Iterable[Any] = (), savepoint: bool = False) -> list[tuple]:
        """A write that returns rows (RETURNING)."""
        with self._statement(savepoint) as conn:
            return conn.execute(sql, list(params)).fetchall()

    def _execute(self, sql: str, params: Iterable[Any] = (), savepoint: bool = False) -> int:
        """A write; how many rows it matched."""
        with self._statement(savepoint) as conn:
            return conn.execute(sql, list(params)).rowcount

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every write this thread makes inside (see Datastore)."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    # -- starting runs -----------------------------------------------------------------------

    def start_run(self, record: dict, condition: Filter, fields: dict, limit: int) -> str:
        return self.start_runs([(record, condition, fields, limit)])[0]

    def start_runs(self, starts: list[tuple[dict, Filter, dict, int]]) -> list[str]:
        """One transaction: the jobs' advisory locks (in one order, so two nodes cannot deadlock),
        then per start one conditional UPDATE that counts the job's running records itself. The
        locks end with the transaction, a few milliseconds later, never held across a run."""
        outcomes = []
        with self.batch(), self._connection() as conn:
            for job_id in sorted({record["job_id"] for record, _, _, _ in starts}):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [f"texium-start:{job_id}"])
            for record, condition, fields, limit in starts:
                expression, params = _changes(dict(fields), {})
                where, where_params = _where(condition)
                where = where or " WHERE true"
                sql = (
                    f'UPDATE "scheduler_executions" SET doc = {expression}{where} AND '
                    f'(SELECT count(*) FROM "scheduler_executions" AS r WHERE {_column("job_id", "r.")} = %s '
                    f"AND {_column('status', 'r.')} = '\"running\"'::jsonb) < %s"
                )
                started = conn.execute(sql, [*params, *where_params, Jsonb(record["job_id"]), limit]).rowcount
                if started or self._started_before(record):
                    outcomes.append("started")
                else:
                    # Still scheduled and held as expected: refused for the limit, to be tried again
                    # (not counted again: a run that ended in between would turn it "lost", stuck).
                    outcomes.append("busy" if self._still_held(record, condition) else "lost")
        return outcomes

    def _still_held(self, record: dict, condition: Filter) -> bool:
        """The record is still scheduled and held as the start expected."""
        current = self.executions.get(record["_id"])
        return (
            current is not None
            and current.get("status") == "scheduled"
            and slot_of(current) == slot_of({**record, **{k: v for k, v in condition.items() if k != "_id"}})
        )

    def release_run(self, record: dict) -> None:
        """Nothing to give back: a run stops counting when its record stops being `running`."""

    # -- schema ------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        """Tables and indexes of every known collection and the schema version, in one
        transaction under an advisory lock (nodes starting together wait for each other)."""
        with self.batch(), self._connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{SCHEMA_TABLE}" (version integer PRIMARY KEY, '
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            (found,) = conn.execute(f'SELECT max(version) FROM "{SCHEMA_TABLE}"').fetchone()
            if found is not None and found > SCHEMA_VERSION:
                raise DatastoreUnavailable(
                    f"{self.describe()} has schema version {found}, newer than this Texium's {SCHEMA_VERSION}: "
                    "upgrade Texium"
                )
            for name in INDEXES:
                self._create(conn, name)
            conn.execute(f'INSERT INTO "{SCHEMA_TABLE}" (version) VALUES (%s) ON CONFLICT DO NOTHING', [SCHEMA_VERSION])
        for name in INDEXES:
            self._collections.setdefault(name, PostgresCollection(self, name))

    def schema_version(self) -> int | None:
        return self._read(f'SELECT max(version) FROM "{SCHEMA_TABLE}"')[0][0]

    @staticmethod
    def _create(conn: psycopg.Connection, name: str) -> None:
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (id text PRIMARY KEY, doc jsonb NOT NULL)')
        for index in INDEXES.get(name, ()):
            columns = [f"({_column(field)}) NULLS FIRST" for field in index.fields]
            columns += [] if index.unique else ["id"]
            conn.execute(
                f"CREATE {'UNIQUE ' if index.unique else ''}INDEX IF NOT EXISTS "
                f'"{_index_name(name, index)}" ON "{name}" ({", ".join(columns)})'
            )

    def collection(self, name: str) -> PostgresCollection:
        found = self._collections.get(name)
        if found is not None:
            return found
        check_collection_name(name)
        if name == SCHEMA_TABLE:
            raise ValueError(f"{name} is the provider's own table")
        with self._collections_lock:
            with self.batch(), self._connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                self._create(conn, name)
            return self._collections.setdefault(name, PostgresCollection(self, name))

    def collection_names(self) -> list[str]:
        rows = self._read(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' AND table_name <> %s ORDER BY table_name",
            [SCHEMA_TABLE],
        )
        return [name for (name,) in rows]

    # -- housekeeping ------------------------------------------------------------------------

    def ping(self) -> None:
        self._read("SELECT 1")

    def describe(self) -> str:
        return describe_url(self._url)

    def ensure_indexes(self) -> None:
        self._create_schema()

    def rebuild_indexes(self) -> list[str]:
        rebuilt = []
        for name, indexes in INDEXES.items():
            for index in indexes:
                self._execute(f'REINDEX INDEX "{_index_name(name, index)}"')
                rebuilt.append(f"{name}.{index.name}")
        return rebuilt

    def optimize(self) -> str:
        self._execute("ANALYZE")
        return f"ANALYZE: planner statistics refreshed for {len(self.collection_names())} tables"

    def vacuum(self) -> str:
        before = self.size_bytes()
        self._execute("VACUUM")  # autocommit: VACUUM cannot run inside a transaction
        return f"VACUUM: {before / 1e6:.1f} MB -> {self.size_bytes() / 1e6:.1f} MB"

    def size_bytes(self) -> int:
        return int(self._read("SELECT pg_database_size(current_database())")[0][0])

    def close(self) -> None:
        self._pool.close()
