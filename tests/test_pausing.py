"""Pausing with intent (issue 21): a pause's note and end, a job that pauses itself after N
failures in a row, and the maintenance switch (pause-all / resume-all) over several nodes."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, wait_for
from texium.core.datastore import new_id
from texium.core.scheduling.pausing import Pauses
from texium.core.timeutil import parse_iso, to_iso, utcnow

FAST = {**SAMPLE_JOBS, "TEXIUM_SCHEDULER_POLL_SECONDS": "1", "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2"}
EVERY_SECOND = {"second": "*/1", "minute": "*"}
SLOW = "tests.sample_jobs.slow.SlowJob"


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def job_of(api, job_id) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def executions(api, job_id, **params) -> list[dict]:
    return api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000, **params}).json()["data"]


def audit(api, job_id, event) -> list[dict]:
    logs = api.get("/api/scheduler/audit-logs", params={"job_id": job_id}).json()["data"]
    return [entry for entry in logs if entry["event"] == event]


# --------------------------------------------------------------------------- a pause's note and end
def test_a_pause_keeps_its_note_and_end_and_a_resume_clears_them(api):
    job_id = api.create_job(api.create_user(), minute="0", hour="3")
    until = iso_in(3600)
    body = {"note": " vendor down ", "until": until}
    answer = api.patch(f"/api/scheduler/jobs/{job_id}/pause", json=body, headers={"X-Texium-User": "ops"})
    assert answer.status_code == 200 and answer.json()["message"] == "Job paused successfully"
    job = job_of(api, job_id)
    assert job["is_paused"] is True and job["next_run_time"] is None
    assert job["pause_note"] == "vendor down" and job["paused_by"] == "ops"
    assert abs(parse_iso(job["paused_until"]) - parse_iso(until)) < timedelta(milliseconds=1)
    assert job["paused_at"] is not None
    assert "vendor down" in audit(api, job_id, "paused")[0]["description"]

    assert api.patch(f"/api/scheduler/jobs/{job_id}/resume").status_code == 200
    job = job_of(api, job_id)
    assert job["is_paused"] is False and job["next_run_time"] is not None
    assert [job[k] for k in ("pause_note", "paused_until", "paused_at", "paused_by")] == [None] * 4

    # No body at all: a plain pause, as before.
    assert api.patch(f"/api/scheduler/jobs/{job_id}/pause").status_code == 200
    job = job_of(api, job_id)
    assert job["is_paused"] is True and job["pause_note"] is None and job["paused_until"] is None


@pytest.mark.parametrize(
    "body, words",
    [
        ({"until": "2020-01-01T00:00:00+00:00"}, "not in the future"),
        ({"until": "2036-12-24T08:00:00"}, "no offset"),
        ({"until": "next tuesday"}, "not an ISO 8601 time"),
        ({"until": 5}, "must be a string"),
        ({"note": "x" * 1001}, "at most 1000"),
        ({"reason": "x"}, "Unknown field"),
    ],
)
def test_a_bad_pause_is_a_400_naming_the_field(api, body, words):
    job_id = api.create_job(api.create_user(), minute="0", hour="3")
    answer = api.patch(f"/api/scheduler/jobs/{job_id}/pause", json=body)
    assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    assert next(iter(body)) in answer.json()["detail"]
    assert job_of(api, job_id)["is_paused"] is False


def test_a_job_resumes_at_its_until_once_even_with_the_server_stopped_then(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=FAST)
    api = server.api
    job_id = api.create_job(api.create_user(), **EVERY_SECOND)
    until = datetime.now(UTC) + timedelta(seconds=3)
    assert api.patch(f"/api/scheduler/jobs/{job_id}/pause", json={"note": "upgrade", "until": until.isoformat()}).ok
    server.stop()
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.5)  # past `until`, nobody running

    restarted = start_server("sqlite", tmp_path / "data", env=FAST)
    api = restarted.api
    job = wait_for(lambda: (job := job_of(api, job_id)) and not job["is_paused"] and job, timeout=10)
    assert job and job["pause_note"] is None and job["paused_until"] is None
    ran = wait_for(
        lambda: [e for e in executions(api, job_id, status="completed") if parse_iso(e["scheduled_at"]) > until]
    )
    assert ran, "the resumed job did not fire"
    resumed = audit(api, job_id, "resumed")
    assert len(resumed) == 1 and resumed[0]["user"] == "scheduler" and "upgrade" in resumed[0]["description"]


# --------------------------------------------------------------------------- pause after failures
def test_pause_after_failures_pauses_the_job_says_why_and_alerts(start_server, tmp_path):
    with http_server() as receiver:
        env = {**FAST, "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32"}
        api = start_server("sqlite", tmp_path / "data", env=env).api
        job_id = api.create_job(
            api.create_user(),
            job_class_string=SLOW,
            pub_kwargs={"seconds": 0.05, "fail": True},
            pause_after_failures=2,
            notify={"webhook": receiver.url + "/hook", "events": ["recovery"]},
            **EVERY_SECOND,
        )
        job = wait_for(lambda: (job := job_of(api, job_id))["is_paused"] and job, timeout=15)
        assert job, "the job never paused itself"
        assert job["paused_by"] == "scheduler" and job["next_run_time"] is None
        assert job["pause_note"] == "Paused automatically after 2 failed runs in a row"
        failed = executions(api, job_id, status="failed")
        assert len(failed) >= 2
        paused = audit(api, job_id, "paused")
        assert len(paused) == 1 and paused[0]["user"] == "scheduler"
        assert "pause_after_failures: 2" in paused[0]["description"]
        hooks = wait_for(lambda: [r for r in receiver.requests if r["headers"].get("X-Texium-Event") == "paused"])
        assert len(hooks) == 1, receiver.requests
        assert "2 failed runs in a row" in json.loads(hooks[0]["body"])["execution"]["error"]
        time.sleep(2.0)  # paused: nothing more runs
        assert len(executions(api, job_id, status="failed")) == len(failed)

        # A resume starts the count again: one more failure does not pause it at once.
        assert api.patch(f"/api/scheduler/jobs/{job_id}/resume").ok
        assert wait_for(lambda: len(executions(api, job_id, status="failed")) > len(failed), timeout=10)
        assert wait_for(lambda: job_of(api, job_id)["is_paused"], timeout=10)
        assert len(executions(api, job_id, status="failed")) >= len(failed) + 2
        assert len(audit(api, job_id, "paused")) == 2


def test_pause_after_failures_is_checked_1_to_100(api):
    owner = api.create_user()
    for bad in (0, 101, "3", 2.5):
        answer = api.post(
            "/api/scheduler/jobs",
            json={"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "x", "pause_after_failures": bad},
        )
        assert answer.status_code == 400 and "pause_after_failures" in answer.json()["detail"], answer.text
    job_id = api.create_job(owner, pause_after_failures=100)
    assert job_of(api, job_id)["pause_after_failures"] == 100
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"pause_after_failures": None}).ok
    assert job_of(api, job_id)["pause_after_failures"] is None


def test_the_streak_counts_ended_occurrences_since_the_last_resume(datastore):
    pauses = Pauses(datastore, lambda *args: None)
    job = {"_id": new_id(), "resumed_at": None}
    start = utcnow() - timedelta(minutes=10)

    def record(status, minute):
        datastore.executions.insert(
            {"job_id": job["_id"], "status": status, "created_at": start + timedelta(minutes=minute)}
        )

    for minute, status in enumerate(["failed", "completed", "failed", "retried", "skipped", "timeout", "failed"]):
        record(status, minute)
    assert pauses.failure_streak(job, 5) == 3  # failed, timeout, failed; then the completed one
    assert pauses.failure_streak(job, 2) == 2
    job["resumed_at"] = start + timedelta(minutes=5, seconds=30)
    assert pauses.failure_streak(job, 5) == 1  # only the failure after the resume counts


# --------------------------------------------------------------------------- the maintenance switch
def test_pause_all_stops_every_node_and_until_ends_it(start_server, tmp_path):
    a = start_server("sqlite", tmp_path / "data", env=FAST)
    b = start_server("sqlite", tmp_path / "data", env=FAST)
    api_a, api_b = a.api, b.api
    job_id = api_a.create_job(api_a.create_user(), **EVERY_SECOND)
    assert wait_for(lambda: executions(api_a, job_id, status="completed"), timeout=10)

    on = api_a.post("/api/scheduler/pause-all", json={"note": "db upgrade"}, headers={"X-Texium-User": "ops"})
    assert on.status_code == 200 and on.json()["maintenance"]["is_paused"] is True, on.text
    switched = utcnow()
    health = api_b.get("/api/scheduler/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    message = health.json()["message"]
    assert "maintenance: every job paused since" in message and "db upgrade" in message
    assert health.json()["maintenance"]["paused_by"] == "ops"
    refused = api_b.post(f"/api/scheduler/jobs/{job_id}/run")
    assert refused.status_code == 409 and "Maintenance is on" in refused.json()["detail"]

    time.sleep(3.5)
    records = executions(api_a, job_id, since=to_iso(switched + timedelta(seconds=0.5)))
    skipped = [e for e in records if e["status"] == "skipped"]
    assert len(skipped) >= 2 and all("maintenance is on" in e["error"] for e in skipped), records
    started = [e for e in records if e["started_at"] and parse_iso(e["started_at"]) > switched]
    assert started == [], started  # nothing started on either node
    assert {e["node_id"] for e in skipped} <= {n["_id"] for n in api_a.get("/api/scheduler/nodes").json()["data"]}
    assert job_of(api_a, job_id)["is_paused"] is False  # the jobs themselves are untouched

    off = api_b.post("/api/scheduler/resume-all")
    assert off.status_code == 200 and off.json()["maintenance"]["is_paused"] is False
    resumed = utcnow()
    assert wait_for(
        lambda: [e for e in executions(api_a, job_id, status="completed") if parse_iso(e["started_at"]) > resumed]
    )
    assert "maintenance" not in api_a.get("/api/scheduler/health").json()["message"]

    # With `until`, it ends by itself, once, on whichever node sees it first.
    until = datetime.now(UTC) + timedelta(seconds=2)
    assert api_b.post("/api/scheduler/pause-all", json={"until": until.isoformat()}).ok
    assert "maintenance" in api_a.get("/api/scheduler/health").json()["message"]
    assert wait_for(lambda: "maintenance" not in api_a.get("/api/scheduler/health").json()["message"], timeout=10)
    assert wait_for(
        lambda: [e for e in executions(api_b, job_id, status="completed") if parse_iso(e["started_at"]) > until],
        timeout=10,
    )
    bad = api_a.post("/api/scheduler/pause-all", json={"until": "2020-01-01T00:00:00Z"})
    assert bad.status_code == 400 and "until" in bad.json()["detail"]
