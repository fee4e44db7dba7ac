"""The PostgreSQL store in a real server and under several nodes, on a throw-away cluster (tests/pg.py)."""

import signal
import threading
from datetime import UTC, datetime

import pytest

from tests import pg
from texium.config import ConfigError, load_settings
from texium.core.datastore import open_datastore
from texium.core.datastore.postgres import SCHEMA_TABLE, SCHEMA_VERSION, PostgresDatastore
from texium.core.errors import DatastoreUnavailable


def test_a_server_on_postgres_runs_jobs_and_keeps_them_across_a_restart(start_server, tmp_path):
    first = start_server("postgres", tmp_path / "data")  # a database of this data directory's (tests/pg.py)
    api = first.api
    user_id = api.create_user(name="On PostgreSQL")
    job_id = api.create_job(user_id, minute="0", hour="9", pub_kwargs={"key": "value"})
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    execution = api.wait_execution(execution_id)
    assert execution["status"] == "completed", execution
    assert execution["output"].endswith("Kwargs: {'key': 'value'}\n")
    assert execution["started_at"].endswith("+00:00") and execution["completed_at"] >= execution["started_at"]
    listed = api.get("/api/scheduler/executions", params={"job_id": job_id}).json()
    assert [e["_id"] for e in listed["data"]] == [execution_id]
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert job["total_executions"] == 1
    assert first.stop(signal.SIGINT) == 0
    log = first.log()
    assert "with PostgreSQL at texium@127.0.0.1:" in log  # the banner names the store ...
    assert pg.PASSWORD not in log  # ... never its password

    second = start_server("postgres", tmp_path / "data")
    assert second.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"] == job
    assert second.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"] == execution


def test_the_schema_version_is_recorded_and_a_newer_one_refused(pg_url):
    store = PostgresDatastore(pg_url)
    assert store.schema_version() == SCHEMA_VERSION
    store._execute(f'INSERT INTO "{SCHEMA_TABLE}" (version) VALUES (%s)', [SCHEMA_VERSION + 1])
    store.close()
    with pytest.raises(DatastoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}, newer") as raised:
        PostgresDatastore(pg_url)
    assert pg.PASSWORD not in str(raised.value)


def test_an_unreachable_database_is_unavailable_without_its_password():
    url = f"postgresql://texium:{pg.PASSWORD}@127.0.0.1:1/texium"
    with pytest.raises(DatastoreUnavailable) as raised:
        open_datastore(None, "texium", "/nonexistent", database_url=url, pool_size=1)
    assert "PostgreSQL at texium@127.0.0.1:1/texium" in str(raised.value)
    assert pg.PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DATABASE_URL": f"mysql://u:{pg.PASSWORD}@h/db"}, "must start with postgresql://"),
        ({"DATABASE_URL": f"postgresql://u:{pg.PASSWORD}@h/db", "MONGO_URI": "mongomock://"}, "choose one store"),
    ],
)
def test_database_url_settings_that_cannot_be_used(environ, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(environ=environ, cwd="/nonexistent")
    assert pg.PASSWORD not in str(raised.value)


def test_database_url_is_read_from_the_environment_without_prefix():
    url = "postgresql://texium@db.internal:5432/texium"
    assert load_settings(environ={"DATABASE_URL": url}, cwd="/nonexistent")["DATABASE_URL"] == url
    assert load_settings(environ={"TEXIUM_DATABASE_URL": url}, cwd="/nonexistent")["DATABASE_URL"] == url


def _start(record, node, barrier, outcomes):
    condition = {"_id": record["_id"], "status": "scheduled", "node_id": record["node_id"], "generation": 1}
    fields = {"status": "running", "started_at": datetime.now(UTC)}
    barrier.wait()
    outcomes.append(node.start_run(record, condition, fields, 2))


def _start(record, node, barrier, outcomes):
    condition = {"_id": record["_id"], "status": "scheduled", "node_id": record["node_id"], "generation": 1}
    fields = {"status": "running", "started_at": datetime.now(UTC)}
    barrier.wait()
    outcomes.append(node.start_run(record, condition, fields, 2))


def test_nodes_starting_runs_of_one_job_at_once_never_pass_its_limit(pg_url):
    """Several nodes (stores with pools of their own) start scheduled records of one job at the
    same instant: the limit holds, counted by PostgreSQL under the job's lock, not by one process."""
    nodes = [PostgresDatastore(pg_url, pool_size=4) for _ in range(4)]
    try:
        for round_ in range(15):
            job_id = f"job-{round_}"
            records = []
            for n in range(8):
                record = {"job_id": job_id, "status": "scheduled", "node_id": f"node-{n % 4}", "generation": 1}
                record["_id"] = nodes[0].executions.insert(record)
                records.append(record)
            barrier, outcomes = threading.Barrier(len(records)), []
            threads = [
                threading.Thread(target=_start, args=(record, nodes[n % 4], barrier, outcomes))
                for n, record in enumerate(records)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcomes) == ["busy"] * 6 + ["started"] * 2
            assert nodes[1].executions.count({"job_id": job_id, "status": "running"}) == 2
    finally:
        for node in nodes:
            node.close()


def test_a_nul_character_in_output_is_stored_as_the_replacement_character(pg_url):
    """jsonb holds no NUL character; a script that prints one must not fail its run's record."""
    store = PostgresDatastore(pg_url)
    try:
        record_id = store.executions.insert({"output": "before\x00after", "error": "literal \\u0000 stays"})
        assert store.executions.get(record_id)["output"] == "before\ufffdafter"
        store.executions.update(record_id, {"output": "a\x00b\x00"})
        store.executions.update_many({"_id": record_id}, {"error": "e\x00"})
        assert store.executions.get(record_id) == {"_id": record_id, "output": "a\ufffdb\ufffd", "error": "e\ufffd"}
        assert store.executions.insert_many([{"output": "\x00"}]) != []
    finally:
        store.close()


def test_a_start_refused_for_the_limit_is_busy_even_when_the_running_run_ends_just_after(pg_url, monkeypatch):
    """The running run ends between the refused start and its answer: the record is still
    scheduled and held, so the answer is "busy" (tried again), never "lost" (left scheduled)."""
    node, other = PostgresDatastore(pg_url), PostgresDatastore(pg_url)
    try:
        running_id = node.executions.insert({"job_id": "j", "status": "running", "node_id": "n", "generation": 1})
        record = {"job_id": "j", "status": "scheduled", "node_id": "n", "generation": 1}
        record["_id"] = node.executions.insert(record)
        real = PostgresDatastore._started_before

        def run_ends_now(self, current):
            other.executions.update(running_id, {"status": "completed"})
            return real(self, current)

        monkeypatch.setattr(PostgresDatastore, "_started_before", run_ends_now)
        condition = {"_id": record["_id"], "status": "scheduled", "node_id": "n", "generation": 1}
        assert node.start_run(record, condition, {"status": "running"}, 1) == "busy"
        monkeypatch.setattr(PostgresDatastore, "_started_before", real)
        assert node.start_run(record, condition, {"status": "running"}, 1) == "started"
    finally:
        node.close()
        other.close()
