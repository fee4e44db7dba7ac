"""Backfill (issue 21): POST /api/scheduler/jobs/{id}/backfill runs a job's own past schedule
through the same claims as its firings, on any node, once per occurrence.

Real servers on SQLite files; two nodes on one file where a node is killed mid-way."""

import time
from datetime import datetime, timedelta

import pytest

from tests.firing_nodes import Node, make_job
from tests.server_process import PROVIDERS, SAMPLE_JOBS, wait_for

SLOW = "tests.sample_jobs.slow.SlowJob"
FAST = {**SAMPLE_JOBS, "TEXIUM_SCHEDULER_POLL_SECONDS": "0.5", "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"}
HOURLY = {"minute": "0", "hour": "*"}
SPAN = {"from": "2026-01-10T00:00:00+00:00", "to": "2026-01-10T05:30:00+00:00"}  # 6 hourly occurrences


@pytest.fixture
def server(start_server, tmp_path):
    return start_server("sqlite", tmp_path / "data", env=FAST)


@pytest.fixture(params=PROVIDERS)
def any_server(request, start_server, tmp_path):
    """A server on each store provider (run keys and the cursor's compare-and-set on both)."""
    return start_server(request.param, tmp_path / "data", env=FAST)


def backfill(api, job_id, **body):
    return api.post(f"/api/scheduler/jobs/{job_id}/backfill", json=body)


def progress(api, job_id, backfill_id) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}/backfills/{backfill_id}").json()["data"]


def finished(api, job_id, backfill_id, timeout=40.0) -> dict:
    return wait_for(lambda: (p := progress(api, job_id, backfill_id))["status"] != "running" and p, timeout=timeout)


def records(api, job_id) -> list[dict]:
    found = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000}).json()["data"]
    return sorted(found, key=lambda r: r["scheduled_at"])


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    "day, runs",
    [
        ("2026-03-29T00:00:00+01:00/2026-03-29T23:59:59+02:00", 23),
        ("2026-10-25T00:00:00+02:00/2026-10-25T23:59:59+01:00", 25),
    ],
)
def test_a_dry_run_across_a_dst_change_lists_the_instants_the_cron_engine_gives(server, day, runs):
    api = server.api
    job_id = api.create_job(api.create_user(), **HOURLY, timezone="Europe/Berlin")
    start, end = day.split("/")
    response = backfill(api, job_id, dry_run=True, **{"from": start, "to": end})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == runs == len(body["occurrences"])
    instants = [moment(o["scheduled_at"]) for o in body["occurrences"]]
    assert all(b - a == timedelta(hours=1) for a, b in zip(instants, instants[1:]))  # each real hour once
    assert instants[0] == moment(start) and not any(o["has_record"] for o in body["occurrences"])


def test_a_backfill_runs_each_occurrence_once_oldest_first_at_most_max_instances_at_once(any_server):
    api = any_server.api
    job_id = api.create_job(api.create_user(), **HOURLY, job_class_string=SLOW, pub_kwargs={"seconds": 0.3})
    response = backfill(api, job_id, **SPAN)
    assert response.status_code == 202, response.text
    backfill_id = response.json()["backfill_id"]
    done = finished(api, job_id, backfill_id)
    assert (done["status"], done["total"], done["done"]) == ("completed", 6, 6), done
    runs = [r for r in records(api, job_id) if r["trigger"] == "backfill"]
    assert [r["status"] for r in runs] == ["completed"] * 6
    assert {r["backfill_id"] for r in runs} == {backfill_id}
    assert [moment(r["scheduled_at"]) for r in runs] == [moment(SPAN["from"]) + timedelta(hours=n) for n in range(6)]
    for earlier, later in zip(runs, runs[1:]):  # max_instances 1 (the default): one after the other, oldest first
        assert moment(later["started_at"]) >= moment(earlier["completed_at"])

    # the same span again and two hours more: only the two new occurrences run
    wider = {**SPAN, "to": "2026-01-10T07:00:00+00:00"}
    listed = backfill(api, job_id, dry_run=True, **wider).json()["occurrences"]
    assert [o["has_record"] for o in listed] == [True] * 6 + [False] * 2
    again = backfill(api, job_id, **wider).json()["backfill_id"]
    assert finished(api, job_id, again)["status"] == "completed"
    runs = [r for r in records(api, job_id) if r["trigger"] == "backfill"]
    assert len(runs) == 8 and len({r["scheduled_at"] for r in runs}) == 8
    assert [r["backfill_id"] for r in runs[-2:]] == [again, again]
    metrics = api.get("/metrics").text
    assert 'texium_backfilled_runs_total{job_class="tests.sample_jobs.slow.SlowJob"} 8.0' in metrics


def test_max_runs_takes_the_oldest_and_max_instances_runs_them_together(server):
    api = server.api
    job_id = api.create_job(
        api.create_user(), **HOURLY, job_class_string=SLOW, pub_kwargs={"seconds": 1.5}, max_instances=3
    )
    backfill_id = backfill(api, job_id, max_runs=3, **SPAN).json()["backfill_id"]
    assert finished(api, job_id, backfill_id)["total"] == 3
    runs = records(api, job_id)
    assert [moment(r["scheduled_at"]).hour for r in runs] == [0, 1, 2]
    starts = sorted(moment(r["started_at"]) for r in runs)
    assert starts[-1] - starts[0] < timedelta(seconds=1.5)  # all three at once: not one after the other


def test_a_cancel_ends_what_has_not_started_and_lets_the_running_one_finish(server):
    api = server.api
    job_id = api.create_job(api.create_user(), **HOURLY, job_class_string=SLOW, pub_kwargs={"seconds": 2})
    backfill_id = backfill(api, job_id, **SPAN).json()["backfill_id"]
    assert wait_for(lambda: any(r["status"] == "running" for r in records(api, job_id)), timeout=10)
    response = api.delete(f"/api/scheduler/jobs/{job_id}/backfills/{backfill_id}")
    assert response.status_code == 200 and response.json()["data"]["status"] == "cancelled", response.text
    time.sleep(3)
    statuses = [r["status"] for r in records(api, job_id)]
    assert statuses.count("completed") == 1 and "running" not in statuses and "scheduled" not in statuses, statuses
    assert progress(api, job_id, backfill_id)["status"] == "cancelled"
    assert api.delete(f"/api/scheduler/jobs/{job_id}/backfills/{backfill_id}").status_code == 409


def test_bad_backfill_requests_are_4xx_naming_what_is_wrong(server):
    api = server.api
    job_id = api.create_job(api.create_user(), minute="*")
    cases = [
        ({"from": SPAN["to"], "to": SPAN["from"]}, 400, "Invalid field to"),
        ({"from": "2026-01-10T00:00:00", "to": SPAN["to"]}, 400, "Invalid field from"),
        ({"from": SPAN["from"]}, 400, "Missing required field: to"),
        ({"from": "0001-01-01T00:00:00+01:00", "to": SPAN["to"]}, 400, "Invalid field from"),  # no overflow, no 500
        ({**SPAN, "max_runs": 0}, 400, "Invalid field max_runs"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T23:59:59Z"}, 400, "44640 occurrences"),
    ]
    for body, status, words in cases:
        response = backfill(api, job_id, **body)
        assert response.status_code == status and words in response.json()["detail"], (body, response.text)
    assert backfill(api, "507f1f77bcf86cd799439099", **SPAN).status_code == 404
    assert api.get(f"/api/scheduler/jobs/{job_id}/backfills/507f1f77bcf86cd799439099").status_code == 404
    assert api.get(f"/api/scheduler/jobs/{job_id}/backfills/nope").status_code == 400
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    response = backfill(api, job_id, **SPAN)
    assert response.status_code == 409 and "paused" in response.json()["detail"]


def test_a_backfill_started_on_a_node_killed_mid_way_is_finished_by_the_other(start_server, tmp_path):
    env = {**FAST, "TEXIUM_HEARTBEAT_SECONDS": "0.3", "TEXIUM_NODE_TIMEOUT_SECONDS": "2"}
    a = start_server("sqlite", tmp_path / "data", env=env)
    b = start_server("sqlite", tmp_path / "data", env=env)
    job_id = a.api.create_job(
        a.api.create_user(), **HOURLY, job_class_string=SLOW, pub_kwargs={"seconds": 1}, max_instances=2
    )
    backfill_id = backfill(a.api, job_id, **{**SPAN, "to": "2026-01-10T09:00:00+00:00"}).json()["backfill_id"]
    assert wait_for(lambda: any(r["status"] == "completed" for r in records(a.api, job_id)), timeout=15)
    a.kill()  # SIGKILL: no hand-back, no last write
    done = finished(b.api, job_id, backfill_id, timeout=60)
    assert (done["status"], done["total"], done["done"]) == ("completed", 10, 10), done
    found = records(b.api, job_id)
    at = [r["scheduled_at"] for r in found]
    assert len(at) == len(set(at)) == 10  # every occurrence exactly one record
    assert all(r["status"] in ("completed", "abandoned") for r in found), [(r["status"], r["error"]) for r in found]
    pids = {r["pid"] for r in found if r["status"] == "completed"}
    assert b.process.pid in pids, (pids, a.process.pid, b.process.pid)


def test_a_claim_whose_claimer_died_before_its_records_is_made_by_another_node(datastore):
    """The interleaving a kill -9 only sometimes hits: node A advances the cursor and dies
    before inserting; node B's pass makes A's records (by the same keys, held by nobody, so
    any pass runs them) and goes on; nothing runs twice, nothing is lost."""
    a, b = Node(datastore).start(), Node(datastore).start()
    try:
        job_id = make_job(a, minute="0", hour="*", day_of_month="*", month="*")
        status, answer = a.manager.backfill(job_id, {**SPAN, "max_runs": 3}, "tester")
        assert status == 202
        backfill_id = answer["backfill_id"]
        a.manager._backfills._claims.make_records = lambda *args: []  # A dies between its two writes
        a.manager._backfills.advance(a.dispatcher.put)
        claimed = datastore.collection("scheduler_backfills").get(backfill_id)
        assert claimed["cursor"] == 2 and not datastore.executions.find({"backfill_id": backfill_id})
        b.manager._backfills.advance(b.dispatcher.put)  # makes A's two, unheld, then claims the third
        unheld = datastore.executions.find({"backfill_id": backfill_id, "node_id": None})
        assert sorted(r["scheduled_at"].hour for r in unheld) == [0, 1]
        for _ in range(100):
            b.scheduler._process_jobs()  # B's whole pass: the records nobody holds, then the backfill
            if b.manager.backfill_status(job_id, backfill_id)["status"] == "completed":
                break
            time.sleep(0.1)
        done = b.manager.backfill_status(job_id, backfill_id)
        assert (done["status"], done["total"], done["done"]) == ("completed", 3, 3), done
        made = datastore.executions.find({"job_id": job_id})
        assert sorted(r["scheduled_at"].hour for r in made) == [0, 1, 2]
        assert all(r["status"] == "completed" and r["trigger"] == "backfill" for r in made)
    finally:
        a.close()
        b.close()
