"""The datastore contract (texium/core/datastore/base.py), run against every provider."""

import re
import threading
from datetime import UTC, datetime, timedelta, timezone

import pymongo.errors
import pytest

from texium.core.datastore.base import new_id
from texium.core.datastore.mongo import MongoDatastore
from texium.core.datastore.sqlite import SQLiteDatastore
from texium.core.errors import DatastoreUnavailable, DuplicateKeyError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "mongomock"])
def store(request, tmp_path):
    if request.param == "sqlite":
        ds = SQLiteDatastore(str(tmp_path))
    else:
        ds = MongoDatastore("mongomock://", "texium_test")
    yield ds
    ds.close()


@pytest.fixture
def sqlite_store(tmp_path):
    ds = SQLiteDatastore(str(tmp_path))
    yield ds
    ds.close()


def emails(docs):
    return sorted(doc["email"] for doc in docs)


def ns(docs):
    return [doc["n"] for doc in docs]


# -- documents ----------------------------------------------------------------------------------


def test_insert_get_round_trip(store):
    plus_two = timezone(timedelta(hours=2))
    doc = {
        "name": "Zoë",
        "created_at": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "started_at": datetime(2024, 5, 1, 14, 0, 0, tzinfo=plus_two),
        "finished_at": None,
        "nested": {"list": [1, 2.5, "x", {"deep": None}], "flag": True},
        "tags": ["a", "b"],
    }
    doc_id = store.executions.insert(doc)
    assert re.fullmatch(r"[0-9a-f]{24}", doc_id)
    assert "_id" not in doc  # the caller's dict is left alone
    got = store.executions.get(doc_id)
    assert got["_id"] == doc_id
    assert got["created_at"] == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)  # ms precision
    assert got["created_at"].utcoffset() == timedelta(0)
    assert got["started_at"] == T0 and got["started_at"].utcoffset() == timedelta(0)
    assert got["finished_at"] is None
    assert got["nested"] == doc["nested"] and got["tags"] == ["a", "b"] and got["name"] == "Zoë"


def test_insert_with_explicit_id(store):
    doc_id = new_id()
    assert store.users.insert({"_id": doc_id, "email": "a@x"}) == doc_id
    assert store.users.get(doc_id)["email"] == "a@x"
    with pytest.raises(ValueError):
        store.users.insert({"_id": "not-an-id", "email": "b@x"})
    with pytest.raises(DuplicateKeyError) as err:
        store.servers.insert({"_id": doc_id})
        store.servers.insert({"_id": doc_id})
    assert err.value.field == "_id"


def test_get_missing_or_invalid_id(store):
    assert store.users.get(new_id()) is None
    assert store.users.get("nope") is None
    assert store.users.get("Z" * 24) is None
    assert store.users.get(None) is None


# -- filters ------------------------------------------------------------------------------------


@pytest.fixture
def numbered(store):
    coll = store.collection("things")
    ids = [
        coll.insert({"n": n, "kind": "odd" if n % 2 else "even", "created_at": T0 + timedelta(minutes=n)})
        for n in range(1, 6)
    ]
    return coll, ids


@pytest.mark.parametrize(
    "query, expected",
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"kind": "odd"}, [1, 3, 5]),
        ({"n": {"$in": [2, 4, 9]}}, [2, 4]),
        ({"n": {"$in": []}}, []),
        ({"n": {"$nin": [2, 4]}}, [1, 3, 5]),
        ({"n": {"$ne": 3}}, [1, 2, 4, 5]),
        ({"n": {"$gt": 3}}, [4, 5]),
        ({"n": {"$gte": 3}}, [3, 4, 5]),
        ({"n": {"$lt": 3}}, [1, 2]),
        ({"n": {"$lte": 3}}, [1, 2, 3]),
        ({"n": {"$gt": 1, "$lt": 5}, "kind": "even"}, [2, 4]),
        ({"created_at": {"$gte": T0 + timedelta(minutes=4)}}, [4, 5]),
        ({"created_at": T0 + timedelta(minutes=2)}, [2]),
        ({"created_at": {"$lt": (T0 + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-5)))}}, [1, 2]),
        ({"missing": {"$nin": ["x"]}}, [1, 2, 3, 4, 5]),
    ],
)
def test_filter_operators(numbered, query, expected):
    coll, _ = numbered
    assert ns(coll.find(query, sort=[("n", 1)])) == expected
    assert coll.count(query) == len(expected)


def test_filter_by_id(numbered):
    coll, ids = numbered
    assert ns(coll.find({"_id": ids[2]})) == [3]
    assert ns(coll.find({"_id": {"$in": [ids[0], ids[4], "bogus"]}}, sort=[("n", 1)])) == [1, 5]
    assert ns(coll.find({"_id": {"$nin": [ids[0]]}}, sort=[("n", 1)])) == [2, 3, 4, 5]
    assert ns(coll.find({"_id": {"$gt": ids[2]}}, sort=[("n", 1)])) == [4, 5]
    assert coll.find({"_id": "bogus"}) == []


def test_none_matches_null_and_missing(store):
    coll = store.collection("things")
    coll.insert({"n": 1, "f": None})
    coll.insert({"n": 2})
    coll.insert({"n": 3, "f": "x"})
    assert ns(coll.find({"f": None}, sort=[("n", 1)])) == [1, 2]
    assert ns(coll.find({"f": {"$ne": None}})) == [3]
    assert ns(coll.find({"f": {"$in": [None, "x"]}}, sort=[("n", 1)])) == [1, 2, 3]
    assert ns(coll.find({"f": {"$nin": [None]}})) == [3]
    assert ns(coll.find({"f": {"$ne": "x"}}, sort=[("n", 1)])) == [1, 2]


def test_bool_equality(store):
    coll = store.collection("things")
    coll.insert({"n": 1, "enabled": True})
    coll.insert({"n": 2, "enabled": False})
    coll.insert({"n": 3})
    assert ns(coll.find({"enabled": True})) == [1]
    assert ns(coll.find({"enabled": False})) == [2]
    assert ns(coll.find({"enabled": {"$ne": True}}, sort=[("n", 1)])) == [2, 3]
    assert ns(coll.find({"enabled": {"$in": [False]}})) == [2]
    assert coll.get(coll.find({"n": 1})[0]["_id"])["enabled"] is True


@pytest.mark.parametrize(
    "bad",
    [
        {"n": {"$regex": "x"}},
        {"n": {}},
        {"$or": [{"n": 1}]},
        {"n": {"$in": 3}},
        {"n": [1, 2]},
    ],
)
def test_bad_filters_raise_value_error(numbered, bad):
    coll, _ = numbered
    with pytest.raises(ValueError):
        coll.find(bad)


# -- sort, paging, count ------------------------------------------------------------------------


def test_sort_tie_break_limit_offset(store):
    coll = store.collection("things")
    ids = [coll.insert({"n": n, "created_at": T0 + timedelta(minutes=n // 2)}) for n in range(6)]
    newest = coll.find(sort=[("created_at", -1)])
    assert ns(newest) == [5, 4, 3, 2, 1, 0]  # equal times: the later _id first
    assert [d["_id"] for d in coll.find(sort=[("created_at", 1)])] == ids
    assert ns(coll.find(sort=[("created_at", -1)], limit=2, offset=1)) == [4, 3]
    assert ns(coll.find(sort=[("created_at", -1)], offset=5)) == [0]
    assert coll.find(sort=[("created_at", -1)], limit=0) == []
    assert ns(coll.find()) == [0, 1, 2, 3, 4, 5]  # no sort: _id ascending
    assert ns(coll.find(sort=[("created_at", 1), ("n", -1)])) == [1, 0, 3, 2, 5, 4]
    assert coll.find_one({"n": {"$gt": 2}}, sort=[("n", -1)])["n"] == 5
    assert coll.find_one({"n": 99}) is None
    with pytest.raises(ValueError):
        coll.find(sort=[("n", 0)])


def test_count(numbered):
    coll, _ = numbered
    assert coll.count() == 5
    assert coll.count({"kind": "even"}) == 2
    assert coll.count({"kind": "none"}) == 0


# -- updates and deletes ------------------------------------------------------------------------


def test_update_set_inc_unset(store):
    jobs = store.jobs
    job_id = jobs.insert({"name": "a", "runs": 1, "note": "x"})
    later = datetime(2024, 6, 1, 8, 30, 0, 999999, tzinfo=UTC)
    doc = jobs.update(
        job_id, fields={"name": "b", "next_run_time": later}, inc={"runs": 2, "failures": 1}, unset=["note"]
    )
    assert doc == {
        "_id": job_id,
        "name": "b",
        "runs": 3,
        "failures": 1,
        "next_run_time": later.replace(microsecond=999000),
    }
    assert jobs.get(job_id) == doc
    assert jobs.update(job_id) == doc
    assert jobs.update(new_id(), fields={"name": "c"}) is None
    assert jobs.update("bogus", inc={"runs": 1}) is None
    with pytest.raises(ValueError):
        jobs.update(job_id, fields={"_id": new_id()})


def test_update_many_and_delete_many_counts(numbered):
    coll, ids = numbered
    assert coll.update_many({"kind": "odd"}, {"label": "o", "seen_at": T0}) == 3
    assert coll.count({"label": "o", "seen_at": T0}) == 3
    assert coll.update_many({"kind": "nothing"}, {"label": "z"}) == 0
    assert coll.update_many({"kind": "even"}, {"meta": {"a": [1]}}) == 2
    assert coll.find({"kind": "even"})[0]["meta"] == {"a": [1]}
    assert coll.delete(ids[0]) is True
    assert coll.delete(ids[0]) is False
    assert coll.delete("bogus") is False
    assert coll.delete_many({"n": {"$gte": 4}}) == 2
    assert coll.delete_many({}) == 2
    assert coll.count() == 0


def test_unique_indexes(store):
    store.users.insert({"email": "a@x"})
    with pytest.raises(DuplicateKeyError) as err:
        store.users.insert({"email": "a@x"})
    assert err.value.field == "email"
    other = store.users.insert({"email": "b@x"})
    with pytest.raises(DuplicateKeyError) as err:
        store.users.update(other, fields={"email": "a@x"})
    assert err.value.field == "email"
    assert store.users.get(other)["email"] == "b@x"

    store.executions.insert({"occurrence_key": "job1@2024-05-01T12:00"})
    with pytest.raises(DuplicateKeyError) as err:
        store.executions.insert({"occurrence_key": "job1@2024-05-01T12:00"})
    assert err.value.field == "occurrence_key"
    # Documents without the field do not collide (run-now executions have no occurrence key).
    store.executions.insert({"status": "running"})
    store.executions.insert({"status": "running"})
    assert store.executions.count() == 3


# -- concurrency --------------------------------------------------------------------------------


def run_threads(count, target):
    errors = []

    def guarded(i):
        try:
            target(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_concurrent_increments_are_not_lost(store):
    job_id = store.jobs.insert({"runs": 0})

    def bump(_):
        for _ in range(20):
            store.jobs.update(job_id, inc={"runs": 1})

    run_threads(20, bump)
    assert store.jobs.get(job_id)["runs"] == 400


def test_concurrent_inserts_keep_emails_unique(store):
    # mongomock has no locking of its own; the provider serialises its calls, so it runs here too.
    duplicates = []

    def create(i):
        for k in range(5):
            try:
                store.users.insert({"email": f"user{(i * 5 + k) % 50}@example.com", "created_at": T0})
            except DuplicateKeyError as exc:
                duplicates.append(exc.field)

    run_threads(20, create)
    assert emails(store.users.find()) == sorted(f"user{n}@example.com" for n in range(50))
    assert duplicates == ["email"] * 50


def test_sqlite_connections_per_thread_closed_from_any_thread(sqlite_store):
    run_threads(4, lambda i: sqlite_store.users.insert({"email": f"{i}@x"}))
    assert sqlite_store.users.count() == 4
    closer = threading.Thread(target=sqlite_store.close)
    closer.start()
    closer.join()
    assert sqlite_store._connections == []


# -- collections and housekeeping ---------------------------------------------------------------


def test_collection_names(store):
    with pytest.raises(ValueError):
        store.collection("Bad-Name")
    with pytest.raises(ValueError):
        store.collection("1abc")
    store.collection("custom_things").insert({"a": 1})
    store.ensure_indexes()
    names = store.collection_names()
    assert "custom_things" in names and "users" in names and "scheduler_executions" in names
    assert store.collection("custom_things").count() == 1


def test_housekeeping(store):
    store.ping()
    store.executions.insert({"job_id": "j", "created_at": T0})
    store.ensure_indexes()
    store.ensure_indexes()
    assert "users.email_unique" in store.rebuild_indexes()
    with pytest.raises(DuplicateKeyError):  # the unique index is back
        store.users.insert({"email": "a@x"})
        store.users.insert({"email": "a@x"})
    assert isinstance(store.optimize(), str) and isinstance(store.vacuum(), str)
    assert store.size_bytes() >= 0
    assert store.executions.count({"job_id": "j"}) == 1


def test_sqlite_persists_across_reopen(tmp_path):
    first = SQLiteDatastore(str(tmp_path / "data"))
    user_id = first.users.insert({"email": "keep@x", "created_at": T0})
    first.close()
    second = SQLiteDatastore(str(tmp_path / "data"))
    try:
        assert second.users.get(user_id) == {"_id": user_id, "email": "keep@x", "created_at": T0}
        assert second.describe() == f"SQLite at {tmp_path / 'data' / 'texium.db'}"
        assert second.size_bytes() > 0
    finally:
        second.close()


def test_sqlite_unusable_data_dir(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DatastoreUnavailable):
        SQLiteDatastore(str(tmp_path / "file" / "data"))


def test_sqlite_queries_use_indexes(sqlite_store):
    def plan(coll, query, sort=None):
        steps = coll.explain(query, sort, limit=100)
        assert not any("TEMP B-TREE" in step for step in steps), steps
        return steps

    execs, jobs = sqlite_store.executions, sqlite_store.jobs
    newest = [("created_at", -1)]
    assert plan(execs, {"_id": new_id()}) == [
        "SEARCH scheduler_executions USING INDEX sqlite_autoindex_scheduler_executions_1 (id=?)"
    ]
    for field in ("job_id", "user_id", "status"):
        steps = plan(execs, {field: "x"}, newest)
        assert steps == [
            f"SEARCH scheduler_executions USING INDEX ix_scheduler_executions__{field}_created_at (<expr>=?)"
        ], steps
    assert plan(jobs, {"next_run_time": {"$lte": T0}}, [("next_run_time", 1)]) == [
        "SEARCH scheduler_jobs USING INDEX ix_scheduler_jobs__next_run_time (<expr><?)"
    ]
    # Newest first over everything walks the created_at index: a scan, but with no sort step.
    assert plan(execs, {}, newest) == ["SCAN scheduler_executions USING INDEX ix_scheduler_executions__created_at"]


# -- MongoDB specifics --------------------------------------------------------------------------


def test_mongo_describe_never_shows_password():
    uri = "mongodb://alice:s3cr3t-pw@db.example.com,db2.example.com:27018/admin?authSource=admin"
    store = MongoDatastore(uri, "texium_db")
    try:
        text = store.describe()
        assert text == "MongoDB at db.example.com:27017,db2.example.com:27018/texium_db"
        assert "s3cr3t" not in text and "alice" not in text
    finally:
        store.close()
    assert MongoDatastore("mongomock://", "demo").describe() == "MongoDB (mongomock, in memory) demo"


def test_mongo_errors_are_translated():
    store = MongoDatastore("mongomock://", "texium_test")
    with pytest.raises(DatastoreUnavailable), store._guard():
        raise pymongo.errors.ServerSelectionTimeoutError("no servers")
    with pytest.raises(DuplicateKeyError) as err:  # what a real server reports
        with store._guard("users"):
            raise pymongo.errors.DuplicateKeyError("E11000", 11000, {"keyPattern": {"email": 1}})
    assert err.value.field == "email"


def test_mongo_rebuild_indexes_never_lets_a_duplicate_in(monkeypatch):
    """MaintenanceJob's rebuild_indexes: a duplicate email or occurrence_key tried right after
    each index drop (whatever the rebuild drops) is refused, and the next start-up's
    ensure_indexes still succeeds."""
    import mongomock

    store = MongoDatastore("mongomock://", f"texium_rebuild_{new_id()}")
    store.ensure_indexes()
    duplicates = {
        "users": {"email": "a@example.com"},
        "scheduler_executions": {"occurrence_key": "job1@2024-05-01T12:00:00+00:00"},
    }
    for name, doc in duplicates.items():
        store.collection(name).insert(dict(doc))
    attempts = []

    def try_duplicate(collection, dropped):
        if collection in duplicates:
            try:
                store.collection(collection).insert(dict(duplicates[collection]))
                attempts.append((collection, dropped, "let in"))
            except DuplicateKeyError:
                attempts.append((collection, dropped, "refused"))

    real = mongomock.collection.Collection
    real_drop_index, real_drop_indexes = real.drop_index, real.drop_indexes

    def drop_index(self, index_or_name, *args, **kwargs):
        real_drop_index(self, index_or_name, *args, **kwargs)
        try_duplicate(self.name, index_or_name)

    def drop_indexes(self, *args, **kwargs):
        real_drop_indexes(self, *args, **kwargs)
        try_duplicate(self.name, "all")

    monkeypatch.setattr(real, "drop_index", drop_index)
    monkeypatch.setattr(real, "drop_indexes", drop_indexes)
    try:
        try:
            rebuilt = store.rebuild_indexes()
        except DuplicateKeyError:  # recreating the unique index found the duplicate that got in
            pytest.fail(f"a duplicate got in while the indexes were rebuilt: {attempts}")
        assert [a for a in attempts if a[2] != "refused"] == []
        dropped = {(collection, index) for collection, index, _ in attempts}
        # The unique indexes themselves were rebuilt (dropped and created again), not skipped.
        assert {("users", "email_unique"), ("scheduler_executions", "occurrence_key_unique")} <= dropped
        assert "users.email_unique" in rebuilt and "scheduler_executions.occurrence_key_unique" in rebuilt
        monkeypatch.undo()

        assert store.users.count() == 1 and store.executions.count() == 1
        assert set(store._db["users"].index_information()) == {"_id_", "email_unique", "created_at"}
        with pytest.raises(DuplicateKeyError) as err:
            store.users.insert({"email": "a@example.com"})
        assert err.value.field == "email"
        with pytest.raises(DuplicateKeyError):
            store.executions.insert(dict(duplicates["scheduler_executions"]))
        store._collections.clear()  # as at the next start-up
        store.ensure_indexes()
    finally:
        store.close()


def test_mongo_rebuild_indexes_tidies_leftovers():
    store = MongoDatastore("mongomock://", f"texium_rebuild_{new_id()}")
    try:
        store.users.insert({"email": "a@example.com", "nickname": "a"})
        users = store._db["users"]
        users.create_index([("nickname", 1)], name="nickname")  # an older version's index
        users.create_index([("nickname", -1)], name="nickname_unique_keep", unique=True)  # not ours: kept
        # What a rebuild that broke off left behind:
        users.create_index([("email", -1)], name="email_unique_rebuilding", unique=True, sparse=True)
        store.rebuild_indexes()
        assert set(users.index_information()) == {"_id_", "email_unique", "created_at", "nickname_unique_keep"}
        with pytest.raises(DuplicateKeyError):
            store.users.insert({"email": "a@example.com"})
    finally:
        store.close()


def test_mongodb_writes_with_majority_concern_and_retries():
    """What multi-node correctness on a replica set rests on (no server is contacted here)."""
    from texium.core.datastore.mongo import MongoDatastore

    store = MongoDatastore("mongodb://127.0.0.1:1/", "texium_test")
    assert store._client.write_concern.document == {"w": "majority"}
    assert store._client.options.retry_writes is True
    store.close()


def test_sqlite_kept_counts_match_a_real_count_after_every_kind_of_write(tmp_path):
    """count() of a whole collection, or of executions by status, reads counts that triggers
    keep; they must equal COUNT(*) whatever wrote (another connection included), and a
    database made before the triggers existed gets them filled in when opened."""
    from texium.core.datastore.sqlite import SQLiteDatastore

    def real(store, status=None):
        where = f" WHERE json_extract(doc, '$.status') = '{status}'" if status else ""
        return store._read(f"SELECT COUNT(*) FROM scheduler_executions{where}")[0][0]

    store = SQLiteDatastore(str(tmp_path))
    other = SQLiteDatastore(str(tmp_path))  # a second connection, as another node has
    executions = store.executions
    ids = [executions.insert({"status": "scheduled", "occurrence_key": f"k{i}"}) for i in range(6)]
    other.executions.insert_many(
        [{"status": "missed", "occurrence_key": "k0"}, {"status": "missed", "occurrence_key": "m"}]
    )
    executions.update(ids[0], fields={"status": "running"})
    other.executions.update_many({"_id": ids[1]}, {"status": "completed"})
    executions.update_many({"status": "scheduled"}, {"status": "abandoned"})
    executions.delete(ids[5])
    other.executions.delete_many({"status": "running"})
    with store.batch():
        executions.insert({"status": "failed"})
    try:
        with store.batch():
            executions.insert({"status": "failed"})
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    for status in ("scheduled", "running", "completed", "abandoned", "missed", "failed"):
        assert executions.count({"status": status}) == real(store, status), status
    assert executions.count() == real(store) == 6
    with store._write() as db:  # as a database written before the triggers existed
        db.execute("DROP TRIGGER scheduler_executions__count_insert")
        db.execute("DELETE FROM _counts")
    reopened = SQLiteDatastore(str(tmp_path))
    assert reopened.executions.count() == 6 and reopened.executions.count({"status": "abandoned"}) == real(
        store, "abandoned"
    )


def test_documents_as_json_text_equal_the_documents_encoded(store):
    """find_json/get_json (the API's fast path) give exactly what encoding find()/get() gives,
    hidden fields removed, whether the hidden field is last (sliced off) or not (parsed)."""
    import json as std_json

    from texium.core.jsontext import dumps

    coll = store.collection("things")
    docs = [
        {"name": "last", "at_time": T0, "nested": {"a": [1, "é"]}, "secret_key": "k1"},
        {"secret_key": "first", "name": "not last"},
        {"name": "escaped", "secret_key": 'quote " and \\ backslash'},
        {"name": "none"},
    ]
    ids = [coll.insert(doc) for doc in docs]
    hidden = ("secret_key",)
    expected = [{k: v for k, v in coll.get(i).items() if k not in hidden} for i in ids]
    assert [std_json.loads(text) for text in coll.find_json(hidden=hidden)] == std_json.loads(dumps(expected))
    assert std_json.loads(coll.get_json(ids[2], hidden=hidden)) == std_json.loads(dumps(expected[2]))
    assert std_json.loads(coll.get_json(ids[0])) == std_json.loads(dumps(coll.get(ids[0])))
    assert coll.get_json("507f1f77bcf86cd799439099") is None and coll.get_json("nope") is None


def test_cached_pages_follow_every_write_from_any_connection(tmp_path):
    """Job, user and server pages are cached as text; a version kept by triggers must make
    every insert, update and delete show at once, written here or by another node."""
    from texium.core.datastore.sqlite import SQLiteDatastore

    here, other = SQLiteDatastore(str(tmp_path)), SQLiteDatastore(str(tmp_path))

    def names():
        return [std_json.loads(text)["name"] for text in here.jobs.find_json(sort=[("name", 1)])]

    import json as std_json

    first = here.jobs.insert({"name": "a"})
    assert names() == ["a"] and names() == ["a"]  # the second read is the cached page
    other.jobs.insert({"name": "b"})
    assert names() == ["a", "b"]
    other.jobs.update(first, fields={"name": "c"})
    assert names() == ["b", "c"]
    other.jobs.update_many({"name": "b"}, {"name": "d"})
    assert names() == ["c", "d"]
    with other.batch():
        other.jobs.delete_many({"name": "d"})
    assert names() == ["c"]
    here.jobs.delete(first)
    assert names() == []
