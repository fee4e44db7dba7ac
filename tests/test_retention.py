"""Retention (texium/core/records/retention.py): old execution records pruned in batches, once
across nodes, never one still referenced; a job's keep_last; output cut to head and tail; the
SQLite file gives the space back. In-process on SQLite and mongomock, then real servers on SQLite
(several processes share it) with records written straight into their store."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest

from tests.server_process import wait_for
from tests.test_metrics import scrape
from texium.core.datastore import open_datastore
from texium.core.datastore.base import new_id
from texium.core.records.retention import KEY, Retention
from texium.core.timeutil import utcnow

FAST = {
    "TEXIUM_EXECUTION_RETENTION_DAYS": "1",
    "TEXIUM_RETENTION_CHECK_SECONDS": "0.2",
    "TEXIUM_ALERT_CHECK_SECONDS": "0.2",
    "TEXIUM_RETENTION_BATCH_SIZE": "50",
}


def old_doc(job_id: str | None, status: str = "completed", days_ago: float = 10, **extra) -> dict:
    created = utcnow() - timedelta(days=days_ago)
    doc_id = new_id()
    doc = {
        "_id": doc_id,
        "job_id": job_id,
        "user_id": "u1",
        "job_name": "old",
        "status": status,
        "trigger": "schedule",
        "output": "x" * 200,
        "error": "",
        "created_at": created,
        "scheduled_at": created,
        "completed_at": created,
        "attempt": 1,
        "retry_of": None,
        **extra,
    }
    return {**doc, "occurrence_key": f"manual:{doc_id}"}


def record(ds, job_id: str | None, status: str = "completed", days_ago: float = 10, **extra) -> str:
    return ds.executions.insert(old_doc(job_id, status, days_ago, **extra))


def retention(ds, days=1, node="n1", **kwargs) -> Retention:
    kwargs.setdefault("every_seconds", 0)
    kwargs.setdefault("round_seconds", 60)
    return Retention(ds, lambda: node, days=days, **kwargs)


def remaining(ds, ids) -> set[str]:
    return {r["_id"] for r in ds.executions.find({"_id": {"$in": list(ids)}})}


def test_old_records_go_in_batches_the_new_stay(datastore):
    old = [record(datastore, "j1") for _ in range(25)]
    new = record(datastore, "j1", days_ago=0)  # the newest completed: the old ones are not the last
    pruning = retention(datastore, batch=10, round_seconds=0)  # one batch per round
    assert [pruning.check(utcnow()) for _ in range(4)] == [10, 10, 5, 0]
    assert remaining(datastore, old) == set()
    assert remaining(datastore, [new]) == {new}


def test_zero_days_keeps_everything(datastore):
    old = [record(datastore, "j1", days_ago=1000) for _ in range(3)] + [record(datastore, "j1", days_ago=0)]
    assert retention(datastore, days=0).check(utcnow()) == 0
    assert remaining(datastore, old) == set(old)


@pytest.mark.parametrize("status", ["scheduled", "running"])
def test_a_record_not_ended_stays(datastore, status):
    kept = record(datastore, "j1", status=status)
    gone = record(datastore, "j1")
    record(datastore, "j1", days_ago=0)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [kept, gone]) == {kept}


def test_a_chain_pending_record_stays(datastore):
    kept = record(datastore, "j1", chain_pending=True)
    gone = record(datastore, "j1", chain_pending=False)
    record(datastore, "j1", days_ago=0)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [kept, gone]) == {kept}


def test_a_run_whose_started_runs_have_not_ended_stays(datastore):
    kept = record(datastore, "j1")
    gone = record(datastore, "j1")
    record(datastore, "j2", status="running", days_ago=0, parent_execution_id=kept)
    record(datastore, "j2", status="completed", days_ago=0, parent_execution_id=gone)
    record(datastore, "j1", days_ago=0)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [kept, gone]) == {kept}


def test_the_attempts_of_a_pending_retry_stay(datastore):
    first = record(datastore, "j1", status="retried")
    second = record(datastore, "j1", status="retried", retry_of=first, attempt=2)
    record(datastore, "j1", status="scheduled", days_ago=0, retry_of=first, attempt=3)
    gone = record(datastore, "j1", status="retried")
    record(datastore, "j1", status="retried", days_ago=0)
    record(datastore, "j1", days_ago=0)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [first, second, gone]) == {first, second}


def test_the_last_record_of_each_status_per_job_stays(datastore):
    failed_old, failed_last = record(datastore, "j1", status="failed", days_ago=20), record(datastore, "j1", "failed")
    completed_last = record(datastore, "j1", days_ago=30)
    other_job_last = record(datastore, "j2", status="failed", days_ago=40)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [failed_old, failed_last, completed_last, other_job_last]) == {
        failed_last,
        completed_last,
        other_job_last,
    }


def test_monitor_pings_follow_the_same_days(datastore):
    old = [record(datastore, None, source="monitor", monitor_id="m1", trigger="ping") for _ in range(3)]
    newest = record(datastore, None, source="monitor", monitor_id="m1", trigger="ping", days_ago=0)
    retention(datastore).check(utcnow())
    assert remaining(datastore, [*old, newest]) == {newest}


def test_keep_last_keeps_the_newest_ended_records_of_its_job(datastore):
    job = datastore.jobs.insert({"name": "kept short", "keep_last": 3, "created_at": utcnow()})
    records = [record(datastore, job, days_ago=0.01 * (10 - i)) for i in range(10)]  # oldest first
    running = record(datastore, job, status="running", days_ago=0.2)
    other = [record(datastore, "j-other", days_ago=0.01 * i) for i in range(5)]
    failed = record(datastore, job, status="failed", days_ago=0.5)  # the last failure: kept
    assert retention(datastore, days=0, batch=4).check(utcnow()) == 7
    assert remaining(datastore, [*records, running, failed, *other]) == {*records[-3:], running, failed, *other}


def test_one_node_prunes_a_round_the_other_waits_for_the_claim(datastore):
    old = [record(datastore, "j1") for _ in range(6)]
    record(datastore, "j1", days_ago=0)
    first, second = retention(datastore, node="a", every_seconds=60), retention(datastore, node="b", every_seconds=60)
    now = utcnow()
    assert first.check(now) == 6
    record(datastore, "j1", days_ago=5)
    assert second.check(now) == 0  # the round of this minute was the other node's
    claim = datastore.state.find_one({"key": KEY})
    assert claim["claimed_by"] == "a" and claim["claim_expires_at"] > now
    assert second.check(now + timedelta(seconds=61)) == 1
    assert remaining(datastore, old) == set()


def test_a_claim_of_a_node_that_died_is_taken_over_when_it_expires(datastore):
    record(datastore, "j1")
    record(datastore, "j1", days_ago=0)
    now = utcnow()
    datastore.state.insert({"key": KEY, "claimed_by": "dead", "claim_expires_at": now + timedelta(seconds=30)})
    assert retention(datastore).check(now) == 0
    assert retention(datastore).check(now + timedelta(seconds=31)) == 1


# -- real servers on SQLite ----------------------------------------------------------------------


def store_of(server):
    return open_datastore(None, "texium_db", str(server.data_dir))


def figure(figures: dict, name: str) -> float:
    return sum(value for _, value in figures.get(name, []))


def pruned_total(api) -> float:
    return figure(scrape(api), "texium_executions_pruned_total")


def test_a_server_prunes_in_the_background_and_counts_it(start_server):
    server = start_server(env=FAST)
    store = store_of(server)
    old = [record(store, "j1") for _ in range(230)]
    newest = record(store, "j1", days_ago=0)
    assert wait_for(lambda: not remaining(store, old), timeout=20)
    assert remaining(store, [newest]) == {newest}
    figures = scrape(server.api)
    assert figure(figures, "texium_executions_pruned_total") == 230
    assert figure(figures, "texium_store_size_bytes") > 0
    assert server.log().count("execution records pruned") <= 230 // 50 + 1  # a line per round, not per record
    store.close()


def test_two_nodes_on_one_store_prune_each_record_once(start_server, tmp_path):
    data = tmp_path / "shared"
    nodes = [start_server(data_dir=data, env=FAST), start_server(data_dir=data, env=FAST)]
    store = store_of(nodes[0])
    old = [record(store, f"j{i % 7}") for i in range(600)]
    for i in range(7):
        record(store, f"j{i}", days_ago=0)
    assert wait_for(lambda: not remaining(store, old), timeout=30)
    time.sleep(0.5)  # a second pruning of the same records would show in the counters now
    assert sum(pruned_total(node.api) for node in nodes) == 600
    for node in nodes:
        assert "check failed" not in node.log()
    store.close()


def test_keep_last_is_a_validated_job_field(server):
    api = server.api
    owner = api.create_user()
    for bad in (0, -1, "3", 1.5, True):
        response = api.post(
            "/api/scheduler/jobs",
            json={"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "k", "keep_last": bad},
        )
        assert response.status_code == 400, (bad, response.text)
        assert "keep_last" in response.json()["detail"]
    job = api.create_job(owner, keep_last=5)
    assert api.get(f"/api/scheduler/jobs/{job}").json()["data"]["keep_last"] == 5
    assert api.put(f"/api/scheduler/jobs/{job}", json={"keep_last": None}).status_code == 200
    assert api.get(f"/api/scheduler/jobs/{job}").json()["data"]["keep_last"] is None


def test_output_above_the_limit_keeps_its_head_and_tail(start_server):
    server = start_server(env={"TEXIUM_MAX_OUTPUT_BYTES": "2048", "TEXIUM_JOB_CLASS_PACKAGES": "tests.sample_jobs"})
    api = server.api
    owner = api.create_user()
    job = api.create_job(owner, job_class_string="tests.sample_jobs.inputs.LongOutputJob", name="long")
    started = api.post(f"/api/scheduler/jobs/{job}/run")
    assert started.status_code in (200, 201, 202), started.text
    execution = api.wait_execution(started.json()["execution_id"])
    output = execution["output"]
    assert output.startswith("line 00000\n")
    assert output.rstrip().endswith("line 09999")
    assert "characters of output cut here" in output
    cut = int(output.split("[... ", 1)[1].split(" ", 1)[0])
    assert cut == 10000 * 11 - 2048
    assert len(output) < 2048 + 200


def test_the_sqlite_file_gives_the_space_back(start_server, tmp_path):
    data = tmp_path / "data"
    first = start_server(data_dir=data, env={"TEXIUM_EXECUTION_RETENTION_DAYS": "0"})
    store = store_of(first)
    for _ in range(20):
        store.executions.insert_many([old_doc("j1", output="y" * 2000) for _ in range(200)])
    record(store, "j1", days_ago=0)
    store.close()
    first.stop()
    full = os.path.getsize(data / "texium.db")
    second = start_server(data_dir=data, env=FAST)
    store = store_of(second)
    assert wait_for(lambda: store.executions.count() == 1, timeout=30)
    assert wait_for(lambda: not store._read("PRAGMA freelist_count")[0][0], timeout=30)
    store.close()
    second.stop()
    assert os.path.getsize(data / "texium.db") < full / 2
