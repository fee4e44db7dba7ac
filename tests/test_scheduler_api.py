"""Scheduler job, execution and utility endpoints against a live server, on every provider."""

import time
from datetime import datetime

import pytest

DOC_JOB = {
    "job_class_string": "jobs.echo.EchoJob",
    "name": "Daily Echo Job",
    "description": "Runs echo job daily",
    "minute": "0",
    "hour": "9",
    "day_of_month": "*",
    "month": "*",
    "day_of_week": "*",
    "pub_args": ["arg1", "arg2"],
    "pub_kwargs": {"key": "value"},
}
# Fires once a year (00:00 on 1 January): tests that count a job's records use it, so a
# scheduled occurrence cannot add one to the count whichever minute the test runs in.
YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}
JOB_FIELDS = {
    "_id",
    "user_id",
    "job_class_string",
    "name",
    "description",
    "minute",
    "hour",
    "day_of_month",
    "month",
    "day_of_week",
    "week",
    "second",
    "timezone",
    "pub_args",
    "pub_kwargs",
    "is_enabled",
    "is_paused",
    "created_at",
    "updated_at",
    "last_run_time",
    "next_run_time",
    "total_executions",
}


@pytest.fixture
def owner(api):
    return api.create_user()


def get_job(api, job_id):
    response = api.get(f"/api/scheduler/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Job retrieved successfully"
    return response.json()["data"]


def test_create_job_as_documented(api, owner):
    response = api.post("/api/scheduler/jobs", json={"user_id": owner, **DOC_JOB})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Job 'Daily Echo Job' created successfully"
    job = get_job(api, body["job_id"])
    assert set(job) >= JOB_FIELDS
    assert job["week"] == "*" and job["second"] == "0" and job["timezone"] == "UTC"
    assert job["is_enabled"] is True and job["is_paused"] is False and job["total_executions"] == 0
    assert job["last_run_time"] is None
    next_run = datetime.fromisoformat(job["next_run_time"])
    assert (next_run.hour, next_run.minute, next_run.second) == (9, 0, 0) and next_run.utcoffset().total_seconds() == 0


def test_monday_at_three_pm_runs_on_a_monday(api, owner):
    job_id = api.create_job(owner, minute="0", hour="15", day_of_week="1")
    next_run = datetime.fromisoformat(get_job(api, job_id)["next_run_time"])
    assert next_run.weekday() == 0 and next_run.hour == 15


def test_sunday_is_zero_and_seven(api, owner):
    for value in ("0", "7", "sun"):
        job_id = api.create_job(owner, minute="0", hour="0", day_of_week=value)
        assert datetime.fromisoformat(get_job(api, job_id)["next_run_time"]).weekday() == 6


def test_list_jobs_and_by_user(api, owner):
    ids = {api.create_job(owner, name=f"j{i}") for i in range(3)}
    mine = api.get(f"/api/scheduler/users/{owner}/jobs").json()
    assert mine["message"] == "Jobs retrieved successfully" and mine["total"] == 3
    assert {j["_id"] for j in mine["data"]} == ids
    assert api.get("/api/scheduler/jobs").json()["total"] >= 3
    assert api.get("/api/scheduler/users/507f1f77bcf86cd799439011/jobs").json() == {"detail": "User not found"}


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"minute": "61"}, "minute"),
        ({"hour": "24"}, "hour"),
        ({"day_of_week": "9"}, "day_of_week"),
        ({"month": "13"}, "month"),
        ({"day_of_month": "0"}, "day_of_month"),
        ({"second": "x"}, "second"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"job_class_string": "jobs.nope.Nope"}, "job_class_string"),
        ({"job_class_string": "os.system"}, "job_class_string"),
        ({"pub_args": "a"}, "pub_args"),
        ({"pub_kwargs": [1]}, "pub_kwargs"),
        ({"name": ""}, "name"),
        ({"user_id": "507f1f77bcf86cd799439011"}, "user_id"),
        ({"is_enabled": "yes"}, "is_enabled"),
        ({"bogus": 1}, "bogus"),
        ({"minute": None}, "minute"),
    ],
)
def test_create_validation_names_the_field(api, owner, fields, named):
    response = api.post("/api/scheduler/jobs", json={"user_id": owner, **DOC_JOB, **fields})
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]


def test_update_recomputes_schedule_and_audits(api, owner):
    job_id = api.create_job(owner, minute="0", hour="9")
    response = api.put(f"/api/scheduler/jobs/{job_id}", json={"name": "Updated Echo Job", "minute": "*/5", "hour": "*"})
    assert response.json() == {"status": "success", "message": "Job updated successfully", "job_id": job_id}
    job = get_job(api, job_id)
    assert job["name"] == "Updated Echo Job" and job["minute"] == "*/5" and job["hour"] == "*"
    next_run = datetime.fromisoformat(job["next_run_time"])
    assert next_run.minute % 5 == 0 and (next_run - datetime.now(next_run.tzinfo)).total_seconds() <= 300
    logs = api.get("/api/scheduler/audit-logs", params={"job_id": job_id}).json()
    assert [entry["event"] for entry in logs["data"]] == ["updated", "created"]
    assert "minute" in logs["data"][0]["description"]
    bad = api.put(f"/api/scheduler/jobs/{job_id}", json={"hour": "99"})
    assert bad.status_code == 400 and "hour" in bad.json()["detail"]
    assert get_job(api, job_id)["hour"] == "*"


def test_disable_pause_resume(api, owner):
    job_id = api.create_job(owner)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": False}).status_code == 200
    assert get_job(api, job_id)["next_run_time"] is None
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": True}).status_code == 200
    assert get_job(api, job_id)["next_run_time"] is not None
    for _ in range(2):  # pausing a paused job is fine
        paused = api.patch(f"/api/scheduler/jobs/{job_id}/pause")
        assert paused.json() == {"status": "success", "message": "Job paused successfully", "job_id": job_id}
    job = get_job(api, job_id)
    assert job["is_paused"] is True and job["next_run_time"] is None
    for _ in range(2):
        resumed = api.patch(f"/api/scheduler/jobs/{job_id}/resume")
        assert resumed.json() == {"status": "success", "message": "Job resumed successfully", "job_id": job_id}
    job = get_job(api, job_id)
    assert job["is_paused"] is False and job["next_run_time"] is not None


def test_run_now_records_the_documented_output(api, owner):
    job_id = api.create_job(owner, pub_args=["arg1", "arg2"], pub_kwargs={"key": "value"}, name="Daily Echo Job")
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")  # run now works for paused jobs too
    started = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert started.status_code == 200
    assert started.json()["message"] == "Job execution started"
    execution = api.wait_execution(started.json()["execution_id"])
    assert execution["status"] == "completed", execution
    assert execution["output"].startswith("Echo Job executed at ")
    assert execution["output"].endswith("\nArgs: ['arg1', 'arg2']\nKwargs: {'key': 'value'}\n")
    assert execution["error"] == "" and execution["job_name"] == "Daily Echo Job"
    assert execution["user_id"] == owner and execution["job_class_string"] == "jobs.echo.EchoJob"
    for key in ("started_at", "completed_at", "created_at", "scheduled_at"):
        assert execution[key].endswith("+00:00")
    assert isinstance(execution["duration_ms"], int) and execution["pid"] > 0 and execution["hostname"]
    job = get_job(api, job_id)
    assert job["total_executions"] == 1 and job["last_run_time"] is not None


def test_execution_filters_and_paging(api, owner):
    job_id = api.create_job(owner, **YEARLY)
    ids = [api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"] for _ in range(5)]
    for execution_id in ids:
        api.wait_execution(execution_id)
    listed = api.get("/api/scheduler/executions", params={"job_id": job_id}).json()
    assert listed["message"] == "Executions retrieved successfully" and listed["total"] == 5
    assert [e["_id"] for e in listed["data"]] == ids[::-1]  # newest first
    page = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and [e["_id"] for e in page["data"]] == ids[::-1][2:4]
    assert api.get("/api/scheduler/executions", params={"user_id": owner, "status": "completed"}).json()["total"] == 5
    assert api.get("/api/scheduler/executions", params={"job_id": job_id, "status": "failed"}).json()["total"] == 0
    future = api.get("/api/scheduler/executions", params={"job_id": job_id, "since": "2999-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    for params in ({"status": "weird"}, {"since": "yesterday"}, {"job_id": "zzz"}, {"limit": 5000}):
        assert api.get("/api/scheduler/executions", params=params).status_code == 400


def test_unknown_ids(api):
    missing = "507f1f77bcf86cd799439099"
    assert api.get(f"/api/scheduler/jobs/{missing}").json() == {"detail": "Job not found"}
    for method, suffix in (("put", ""), ("delete", ""), ("patch", "/pause"), ("patch", "/resume"), ("post", "/run")):
        kwargs = {"json": {"name": "x"}} if method == "put" else {}
        response = getattr(api, method)(f"/api/scheduler/jobs/{missing}{suffix}", **kwargs)
        assert response.status_code == 404 and response.json() == {"detail": "Job not found"}
    assert api.get(f"/api/scheduler/executions/{missing}").json() == {"detail": "Execution not found"}
    assert api.get("/api/scheduler/jobs/123").status_code == 400


def test_delete_keeps_history(api, owner):
    job_id = api.create_job(owner)
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    api.wait_execution(execution_id)
    assert api.delete(f"/api/scheduler/jobs/{job_id}").json()["message"] == "Job deleted successfully"
    assert api.get(f"/api/scheduler/jobs/{job_id}").status_code == 404
    assert api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"] == "completed"
    events = [e["event"] for e in api.get("/api/scheduler/audit-logs", params={"job_id": job_id}).json()["data"]]
    assert events == ["deleted", "run_now", "created"]


def test_available_jobs(api):
    body = api.get("/api/scheduler/available-jobs").json()
    assert body["message"] == "Available jobs retrieved successfully"
    echo = body["jobs"][0]
    assert echo["class_string"] == "jobs.echo.EchoJob" and echo["name"] == "EchoJob"
    assert echo["description"] == "Simple job that echoes arguments" and "arguments" in echo["meta_info"]
    assert body["total"] == len(body["jobs"])


def test_full_class_path_is_accepted_and_normalised(api, owner):
    job_id = api.create_job(owner, job_class_string="texium.jobs.echo.EchoJob")
    assert get_job(api, job_id)["job_class_string"] == "jobs.echo.EchoJob"


def test_stats_per_user(api, owner):
    job_id = api.create_job(owner, **YEARLY)
    api.create_job(owner, **YEARLY)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    api.wait_execution(api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"])
    body = api.get("/api/scheduler/stats", params={"user_id": owner}).json()
    assert body["message"] == "Stats retrieved successfully"
    assert body["stats"] == {
        "total_jobs": 2,
        "enabled_jobs": 2,
        "paused_jobs": 1,
        "total_executions": 1,
        "completed_executions": 1,
        "failed_executions": 0,
        "abandoned_executions": 0,
        "timeout_executions": 0,
        "cancelled_executions": 0,
        "retried_executions": 0,
        "running_executions": 0,
        "skipped_executions": 0,
        "missed_executions": 0,
        "ended_executions": 1,
        "excluded_executions": 0,
        "success_rate": 100.0,
        "by_trigger": {"schedule": 0, "run_now": 1, "retry": 0, "backfill": 0, "chain": 0, "url": 0},
    }
    assert get_job(api, job_id)["total_executions"] == body["stats"]["total_executions"]
    fresh = api.create_user()
    assert api.get("/api/scheduler/stats", params={"user_id": fresh}).json()["stats"]["success_rate"] == 0.0


def test_health(api):
    body = api.get("/api/scheduler/health").json()
    assert body["status"] == "healthy" and body["message"] == "Scheduler is running"
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() is not None


def test_cron_preview(api):
    body = api.get(
        "/api/scheduler/cron/preview", params={"minute": "0", "hour": "15", "day_of_week": "1", "count": 3}
    ).json()
    assert body["message"] == "Cron preview generated successfully"
    times = [datetime.fromisoformat(t) for t in body["next_run_times"]]
    assert len(times) == 3 and all(t.weekday() == 0 and t.hour == 15 for t in times)
    assert "Monday" in body["description"]
    bad = api.get("/api/scheduler/cron/preview", params={"day_of_week": "8"})
    assert bad.status_code == 400 and "day_of_week" in bad.json()["detail"]


def test_jobs_fire_every_second(api, owner):
    job_id = api.create_job(owner, second="*/1", minute="*")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        done = api.get("/api/scheduler/executions", params={"job_id": job_id, "status": "completed"}).json()
        if done["total"] >= 2:
            break
        time.sleep(0.1)
    assert done["total"] >= 2
    scheduled = [e["scheduled_at"] for e in done["data"]]
    assert len(set(scheduled)) == len(scheduled)  # one execution per occurrence
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    time.sleep(0.3)
    count = api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["total"]
    time.sleep(1.5)
    assert api.get("/api/scheduler/executions", params={"job_id": job_id}).json()["total"] == count
