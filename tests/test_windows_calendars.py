"""Issue 21, windows and calendars, through real servers: start_at/end_at, max_runs, run_at,
blackout calendars (periods, recurring, iCalendar holidays) and exclude_calendars."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.server_process import wait_for


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def runs_of(api, job_id: str) -> list[dict]:
    data = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000}).json()["data"]
    return sorted(data, key=lambda e: e["scheduled_at"])


def job(api, job_id: str) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def whole_second(after: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=after)).replace(microsecond=0)


# ---------------------------------------------------------------------------- firing
@pytest.fixture(scope="module")
def firing(tmp_path_factory):
    from tests.server_process import ServerProcess

    process = ServerProcess("sqlite", tmp_path_factory.mktemp("windows") / "data").start()
    yield process
    process.stop()


def test_a_window_is_respected_by_real_firing(firing):
    api = firing.api
    owner = api.create_user()
    start, end = whole_second(3), whole_second(6)
    job_id = api.create_job(owner, second="*", start_at=iso(start), end_at=iso(end))
    assert parse(job(api, job_id)["next_run_time"]) == start
    wait_for(lambda: job(api, job_id)["next_run_time"] is None, timeout=15)
    time.sleep(1.5)
    fired = [parse(e["scheduled_at"]) for e in runs_of(api, job_id)]
    assert fired == [start + timedelta(seconds=n) for n in range(4)], fired


def test_max_runs_disables_the_job_after_n_runs(firing):
    api = firing.api
    owner = api.create_user()
    job_id = api.create_job(owner, second="*", max_runs=3)
    wait_for(lambda: not job(api, job_id)["is_enabled"], timeout=15)
    stored = job(api, job_id)
    assert stored["next_run_time"] is None and stored["run_count"] == 3
    assert "max_runs reached" in stored["disabled_reason"]
    wait_for(lambda: all(e["status"] == "completed" for e in runs_of(api, job_id)), timeout=10)
    time.sleep(2)  # nothing more fires
    assert [e["status"] for e in runs_of(api, job_id)] == ["completed"] * 3
    audit = api.get("/api/scheduler/audit-logs", params={"job_id": job_id}).json()["data"]
    assert [a["user"] for a in audit if a["event"] == "disabled"] == ["scheduler"]
    # enabling again starts the count again
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"is_enabled": True}).status_code == 200
    again = job(api, job_id)
    assert again["run_count"] == 0 and again["disabled_reason"] is None and again["next_run_time"] is not None
    api.delete(f"/api/scheduler/jobs/{job_id}")


def test_run_at_fires_a_one_off_job_once(firing):
    api = firing.api
    owner = api.create_user()
    at = whole_second(2)
    job_id = api.create_job(owner, run_at=iso(at))
    assert parse(job(api, job_id)["next_run_time"]) == at
    wait_for(lambda: len(runs_of(api, job_id)) == 1 and job(api, job_id)["next_run_time"] is None, timeout=10)
    time.sleep(2)
    (run,) = runs_of(api, job_id)
    assert parse(run["scheduled_at"]) == at and run["trigger"] == "schedule"
    assert api.wait_execution(run["_id"])["status"] == "completed"
    # resuming a fired one-off does not fire it again
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    api.patch(f"/api/scheduler/jobs/{job_id}/resume")
    assert job(api, job_id)["next_run_time"] is None


def test_a_recurring_blackout_skips_runs_of_a_second_level_job(firing):
    api = firing.api
    owner = api.create_user()
    blackout = {"second": "*/10", "minute": "*", "duration_seconds": 5, "timezone": "UTC"}
    calendar = api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "busy", "recurring": [blackout]})
    assert calendar.status_code == 201, calendar.text
    job_id = api.create_job(owner, second="*", exclude_calendars=[calendar.json()["calendar_id"]])
    time.sleep(12)
    api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    runs = runs_of(api, job_id)
    seconds = [parse(e["scheduled_at"]).second for e in runs]
    assert len(runs) >= 5, seconds
    assert all(s % 10 >= 5 for s in seconds), seconds  # nothing in second 0-4 of each ten
    assert not [e for e in runs if e["status"] == "missed"]
    excluded = job(api, job_id)["excluded_runs"]
    assert excluded >= 5
    stats = api.get("/api/scheduler/stats", params={"job_id": job_id}).json()["stats"]
    assert stats["excluded_executions"] == excluded


# ---------------------------------------------------------------------------- validation
def test_window_fields_are_validated(api):
    owner = api.create_user()
    now = datetime.now(UTC)
    cases = [
        ({"start_at": "tomorrow"}, "start_at"),
        ({"end_at": "2030-01-01T00:00:00"}, "end_at"),  # no offset
        ({"start_at": iso(now + timedelta(hours=2)), "end_at": iso(now + timedelta(hours=1))}, "end_at"),
        ({"max_runs": 0}, "max_runs"),
        ({"run_at": iso(now - timedelta(minutes=1))}, "run_at"),
        ({"run_at": iso(now + timedelta(hours=1)), "minute": "5"}, "run_at"),
        ({"exclude_calendars": ["507f1f77bcf86cd799439011"]}, "exclude_calendars[0]"),
        ({"exclude_calendars": ["nope"]}, "exclude_calendars"),
    ]
    for fields, field in cases:
        body = {"user_id": owner, "job_class_string": "jobs.echo.EchoJob", "name": "w", **fields}
        response = api.post("/api/scheduler/jobs", json=body)
        assert response.status_code == 400, (fields, response.text)
        assert f"Invalid field {field}" in response.json()["detail"], (fields, response.text)


def test_calendar_crud_validation_and_ownership(api):
    owner, other = api.create_user(), api.create_user(role="user")
    body = {
        "user_id": owner,
        "name": "Freeze",
        "periods": [{"start": "2030-12-20T00:00:00+01:00", "end": "2031-01-04T00:00:00+01:00"}],
        "recurring": [{"minute": "0", "hour": "2", "duration_seconds": 3600}],
    }
    created = api.post("/api/scheduler/calendars", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["message"] == "Calendar 'Freeze' created successfully"
    calendar_id = created.json()["calendar_id"]
    got = api.get(f"/api/scheduler/calendars/{calendar_id}").json()
    (period,) = got["data"]["periods"]
    assert got["status"] == "success" and parse(period["start"]) == datetime(2030, 12, 19, 23, tzinfo=UTC)
    assert parse(period["end"]) == datetime(2031, 1, 3, 23, tzinfo=UTC) and period["end"].endswith("+00:00")
    assert got["data"]["recurring"][0]["hour"] == "2" and got["data"]["holidays"] == []
    listed = api.get("/api/scheduler/calendars").json()
    assert listed["total"] >= 1 and calendar_id in [c["_id"] for c in listed["data"]]
    assert api.put(f"/api/scheduler/calendars/{calendar_id}", json={"name": "Year end"}).status_code == 200
    assert api.get(f"/api/scheduler/calendars/{calendar_id}").json()["data"]["name"] == "Year end"
    bad = [
        ({"periods": [{"start": "2030-01-02T00:00:00+00:00", "end": "2030-01-01T00:00:00+00:00"}]}, "periods[0].end"),
        ({"periods": [{"start": "2030-01-02", "end": "2030-01-03T00:00:00+00:00"}]}, "periods[0].start"),
        ({"recurring": [{"minute": "61", "duration_seconds": 10}]}, "recurring[0]"),
        ({"recurring": [{"minute": "1"}]}, "recurring"),
        ({"name": ""}, "name"),
    ]
    for fields, field in bad:
        response = api.put(f"/api/scheduler/calendars/{calendar_id}", json=fields)
        assert response.status_code == 400 and f"Invalid field {field}" in response.json()["detail"], response.text
    missing = api.post("/api/scheduler/calendars", json={"user_id": owner})
    assert missing.status_code == 400 and missing.json()["detail"] == "Missing required field: name"
    assert api.get("/api/scheduler/calendars/507f1f77bcf86cd799439011").status_code == 404
    # a `user`'s job may not exclude someone else's calendar
    refused = api.post(
        "/api/scheduler/jobs",
        json={
            "user_id": other,
            "job_class_string": "jobs.echo.EchoJob",
            "name": "x",
            "exclude_calendars": [calendar_id],
        },
    )
    assert refused.status_code == 400 and "exclude_calendars[0]" in refused.json()["detail"]
    # 409 while a job excludes it, naming the job
    job_id = api.create_job(owner, name="Nightly export", exclude_calendars=[calendar_id])
    conflict = api.delete(f"/api/scheduler/calendars/{calendar_id}")
    assert conflict.status_code == 409 and "Nightly export" in conflict.json()["detail"], conflict.text
    assert job_id in conflict.json()["detail"]
    api.put(f"/api/scheduler/jobs/{job_id}", json={"exclude_calendars": []})
    deleted = api.delete(f"/api/scheduler/calendars/{calendar_id}")
    assert deleted.status_code == 200 and deleted.json()["calendar_id"] == calendar_id
    assert api.get(f"/api/scheduler/calendars/{calendar_id}").status_code == 404


def ics(*events: str) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//texium tests//EN\r\n" + "".join(events) + "END:VCALENDAR\r\n"
    ).encode()


def event(uid: str, start: datetime, end: datetime, summary: str, rrule: str = "") -> str:
    day = "%Y%m%d"
    lines = [
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        f"DTSTART;VALUE=DATE:{start.strftime(day)}",
        f"DTEND;VALUE=DATE:{end.strftime(day)}",
        f"SUMMARY:{summary}",
        *([f"RRULE:{rrule}"] if rrule else []),
        "END:VEVENT",
    ]
    return "\r\n".join(lines) + "\r\n"


def test_ics_holidays_exclude_the_occurrences_on_those_days(api):
    owner = api.create_user()
    day = (datetime.now(UTC) + timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    calendar_id = api.post(
        "/api/scheduler/calendars", json={"user_id": owner, "name": "Holidays", "timezone": "UTC"}
    ).json()["calendar_id"]
    job_id = api.create_job(
        owner, minute="0", hour="12", start_at=iso(day), exclude_calendars=[calendar_id], timezone="UTC"
    )
    assert parse(job(api, job_id)["next_run_time"]) == day + timedelta(hours=12)
    holiday = event("h1@test", day, day + timedelta(days=1), "Founders' day")
    bridge = event("h2@test", day + timedelta(days=1), day + timedelta(days=2), "Bridge", "FREQ=DAILY;COUNT=2")
    url = f"/api/scheduler/calendars/{calendar_id}/ics"
    imported = api.post(url, data=ics(holiday, bridge), headers={"Content-Type": "text/calendar"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["holidays"] == 3 and imported.json()["message"] == "Imported 3 holidays"
    holidays = api.get(f"/api/scheduler/calendars/{calendar_id}").json()["data"]["holidays"]
    assert [h["summary"] for h in holidays] == ["Founders' day", "Bridge", "Bridge"]
    # the job's next run moved past the three excluded days at once
    assert parse(job(api, job_id)["next_run_time"]) == day + timedelta(days=3, hours=12)
    preview = job(api, job_id)
    assert preview["excluded_runs"] == 0  # counted when the scheduler passes them, not ahead
    wrong_type = api.post(url, data=ics(holiday), headers={"Content-Type": "application/json"})
    assert wrong_type.status_code == 415 and "text/calendar" in wrong_type.json()["detail"]
    broken = api.post(url, data=b"BEGIN:VCALENDAR\r\nnot a line\r\n", headers={"Content-Type": "text/calendar"})
    assert broken.status_code == 400 and broken.json()["detail"].startswith("Invalid iCalendar body")
    conflict = api.delete(f"/api/scheduler/calendars/{calendar_id}")
    assert conflict.status_code == 409 and job_id in conflict.json()["detail"]
