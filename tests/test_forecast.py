"""The schedule forecast (texium/core/views/forecast.py) and the dashboard's two summary endpoints
(texium/core/views/dashboard.py): pure tests of the counting, then the endpoints on each provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from texium.core.scheduling import cron
from texium.core.views.dashboard import error_summary
from texium.core.views.forecast import BUDGET, MAX_HOURS, forecast, per_job_limit

NOW = datetime(2026, 3, 2, 10, 17, 5, tzinfo=UTC)  # a Monday
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def job(job_id: str, **fields) -> dict:
    doc = {"_id": job_id, "name": job_id, "is_enabled": True, "is_paused": False, **cron.DEFAULTS, "timezone": "UTC"}
    doc.update(fields)
    return doc


# --------------------------------------------------------------------------- pure
def test_counts_fire_times_per_hour_from_the_start_of_this_hour():
    hourly = job("hourly", minute="0")
    quarterly = job("quarterly", minute="*/15")
    result = forecast([hourly, quarterly], 24, NOW)
    assert result["start"] == START and result["end"] == START + timedelta(hours=24)
    assert len(result["buckets"]) == 24
    assert result["buckets"][0] == {"start": START, "runs": 5, "jobs": 2}  # 10:00 counts although it is 10:17
    assert all(b["runs"] == 5 and b["jobs"] == 2 for b in result["buckets"])
    assert result["total_runs"] == 24 * 5
    assert [(j["job_id"], j["runs"], j["capped"]) for j in result["jobs"]] == [
        ("quarterly", 96, False),
        ("hourly", 24, False),
    ]
    assert result["jobs"][1]["first_run"] == START


def test_a_pile_up_shows_in_its_hour():
    jobs = [job(f"nightly-{i}", minute=str(i % 5), hour="2") for i in range(40)]
    result = forecast(jobs, 48, NOW)
    busiest = max(result["buckets"], key=lambda b: b["runs"])
    assert busiest == {"start": datetime(2026, 3, 3, 2, 0, tzinfo=UTC), "runs": 40, "jobs": 40}
    assert sum(1 for b in result["buckets"] if b["runs"]) == 2  # 02:00 on the 3rd and on the 4th


def test_only_enabled_unpaused_jobs_count_and_time_zones_are_honoured():
    jobs = [
        job("paused", minute="0", is_paused=True),
        job("disabled", minute="0", is_enabled=False),
        job("tokyo", minute="0", hour="9", timezone="Asia/Tokyo"),  # 09:00 JST is 00:00 UTC
    ]
    result = forecast(jobs, 24, NOW)
    assert [j["job_id"] for j in result["jobs"]] == ["tokyo"]
    hits = [b["start"] for b in result["buckets"] if b["runs"]]
    assert hits == [datetime(2026, 3, 3, 0, 0, tzinfo=UTC)]


def test_the_cost_is_bounded_and_a_capped_job_says_so():
    every_second = job("busy", second="*")
    result = forecast([every_second], MAX_HOURS, NOW)
    limit = per_job_limit(MAX_HOURS, 1)
    assert limit == 60 * MAX_HOURS  # one per minute of the window
    assert result["jobs"][0]["runs"] == limit and result["jobs"][0]["capped"] is True
    assert result["capped_jobs"] == 1 and result["per_job_limit"] == limit
    # Many jobs share the budget, but each still gets at least one run per hour of the window.
    assert per_job_limit(24, 10_000) == 24
    assert per_job_limit(168, 500) * 500 <= BUDGET


def test_a_broken_schedule_is_reported_not_raised():
    result = forecast([job("broken", timezone="Mars/Olympus"), job("fine", minute="0")], 2, NOW)
    assert [e["job_id"] for e in result["errors"]] == ["broken"]
    assert "timezone" in result["errors"][0]["error"]
    assert [j["job_id"] for j in result["jobs"]] == ["fine"]


@pytest.mark.parametrize("hours", [0, -1, MAX_HOURS + 1])
def test_hours_out_of_range_are_refused(hours):
    with pytest.raises(ValueError):
        forecast([], hours, NOW)


def test_error_summary_is_one_useful_line():
    assert error_summary("") == ""
    assert error_summary("JobError: boom\nmore") == "JobError: boom"
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad value\n'
    assert error_summary(traceback) == "ValueError: bad value"


# --------------------------------------------------------------------------- endpoints
@pytest.mark.parametrize("hours", ["0", "337", "abc", "1.5"])
def test_forecast_endpoint_validates_hours(api, hours):
    response = api.get("/api/scheduler/forecast", params={"hours": hours})
    assert response.status_code == 400
    assert "hours" in response.json()["detail"]


def test_forecast_endpoint_counts_a_new_job(api):
    user = api.create_user()
    job_id = api.create_job(user, name="forecast me", minute="*/30")
    paused = api.create_job(user, name="paused", minute="*")
    assert api.patch(f"/api/scheduler/jobs/{paused}/pause").status_code == 200
    response = api.get("/api/scheduler/forecast", params={"hours": 6})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["hours"] == 6 and len(body["buckets"]) == 6
    mine = next(j for j in body["jobs"] if j["job_id"] == job_id)
    assert mine["runs"] == 12 and mine["capped"] is False
    assert all(j["job_id"] != paused for j in body["jobs"])
    assert body["total_runs"] == sum(b["runs"] for b in body["buckets"])
    assert api.get("/api/scheduler/forecast").json()["hours"] == 168  # the default: a week


def test_job_summaries_give_each_jobs_latest_runs(api):
    user = api.create_user()
    job_id = api.create_job(user, name="summarised", minute="0", hour="9")
    for _ in range(3):
        run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert api.wait_execution(run)["status"] == "completed"
    response = api.get("/api/scheduler/job-summaries", params={"runs": 2, "user_id": user})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    summary = body["data"][0]
    assert summary["job_id"] == job_id
    assert summary["schedule_description"] == "At 09:00 every day"
    assert [r["status"] for r in summary["recent_runs"]] == ["completed", "completed"]
    assert set(summary["recent_runs"][0]) >= {"_id", "status", "created_at", "duration_ms"}
    assert "output" not in summary["recent_runs"][0], "a strip needs no output"
    assert summary["last_success"]["_id"] == summary["recent_runs"][0]["_id"]
    assert summary["last_failure"] is None
    assert api.get("/api/scheduler/job-summaries", params={"runs": 0}).status_code == 400
    assert api.get("/api/scheduler/job-summaries", params={"user_id": "f" * 24}).status_code == 404


def test_activity_counts_executions_per_bucket_by_status(api):
    user = api.create_user()
    job_id = api.create_job(user, name="active")
    run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(run)["status"] == "completed"
    hourly = api.get("/api/scheduler/activity").json()
    assert hourly["bucket"] == "hour" and len(hourly["buckets"]) == 24
    assert sum(b["counts"].get("completed", 0) for b in hourly["buckets"][-2:]) >= 1  # the hour may just turn
    daily = api.get("/api/scheduler/activity", params={"bucket": "day", "timezone": "Europe/Berlin"}).json()
    assert daily["timezone"] == "Europe/Berlin" and len(daily["buckets"]) == 30
    assert sum(b["total"] for b in daily["buckets"][-2:]) >= 1
    for params in ({"bucket": "week"}, {"timezone": "Nowhere/Else"}):
        response = api.get("/api/scheduler/activity", params=params)
        assert response.status_code == 400 and "detail" in response.json()
