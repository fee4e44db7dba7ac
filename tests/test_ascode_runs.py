"""`texium import`'s plan shows the runs each job change adds or removes over the next 7 days
(the stored definition against the imported one, both through the server's planner), and warns
when a job's p95 run time exceeds its interval. Through the real CLI against a real server."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from tests.server_process import SAMPLE_JOBS
from tests.test_ascode import export, texium

ECHO = "jobs.echo.EchoJob"
YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # only run-nows


def plan(url: str, document: dict, tmp_path, *args: str) -> str:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(document))
    result = texium("import", str(path), "--url", url, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def job_entry(document: dict, name: str) -> dict:
    return next(job for job in document["jobs"] if job["name"] == name)


def runs_line(output: str, label: str) -> str:
    """The line under a job's change that says its runs."""
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if label in line)
    return lines[index + 1].strip()


def test_plan_counts_runs_added_and_removed_by_schedule_changes_creates_and_deletes(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    api = server.api
    owner = api.create_user(email="ops@example.com")
    api.create_job(owner, name="Hourly", minute="0", timezone="UTC")
    api.create_job(owner, name="Going", minute="15", timezone="UTC")
    api.create_job(owner, name="Renamed only", minute="5", hour="3", timezone="UTC")
    document = export(api.base_url)
    job_entry(document, "Hourly")["minute"] = "*/30"
    job_entry(document, "Renamed only")["description"] = "no change of time"
    document["jobs"] = [job for job in document["jobs"] if job["name"] != "Going"]
    document["jobs"].append(
        {"name": "Nightly", "owner": "ops@example.com", "job_class_string": ECHO, "hour": "3", "minute": "0"}
    )

    output = plan(api.base_url, document, tmp_path, "--delete")

    # hourly -> every 30 minutes: each :30 of the next 7 days is added (168 of them), none removed
    hourly = runs_line(output, "update job 'Hourly'")
    match = re.fullmatch(r"\+168 runs in the next 7 days \(first added (\S+)\)", hourly)
    assert match, output
    first = datetime.fromisoformat(match[1])
    assert (first.minute, first.second, first.utcoffset().total_seconds()) == (30, 0, 0)
    assert (first - datetime.now(first.tzinfo)).total_seconds() <= 3600
    # a new daily job: +7; a deleted hourly one: -168 (its first removed run is its next_run_time)
    nightly = runs_line(output, "Nightly")
    assert re.fullmatch(r"\+7 runs in the next 7 days \(first added \S+T03:00:00\+00:00\)", nightly), output
    going = next(j for j in api.get("/api/scheduler/jobs").json()["data"] if j["name"] == "Going")
    expected = datetime.fromisoformat(going["next_run_time"]).isoformat()
    assert runs_line(output, "delete job 'Going'") == f"-168 runs in the next 7 days (first removed {expected})"
    # a change that moves no time says nothing of runs
    assert "~ update job 'Renamed only' of ops@example.com: description" in output
    assert not re.match(r"[+-]\d|no run", runs_line(output, "update job 'Renamed only'")), output


def test_plan_counts_the_runs_a_pause_or_a_timezone_removes(start_server, tmp_path):
    server = start_server("mongomock", tmp_path / "data")
    api = server.api
    owner = api.create_user(email="ops@example.com")
    api.create_job(owner, name="Daily", minute="0", hour="6", timezone="UTC")
    api.create_job(owner, name="Moved", minute="0", hour="6", timezone="UTC")
    document = export(api.base_url)
    job_entry(document, "Daily")["is_paused"] = True
    job_entry(document, "Moved")["timezone"] = "Asia/Tokyo"  # 06:00 in Tokyo is 21:00 UTC

    output = plan(api.base_url, document, tmp_path)

    assert re.fullmatch(r"-7 runs in the next 7 days \(first removed \S+T06:00:00\+00:00\)", runs_line(output, "Daily"))
    moved = runs_line(output, "update job 'Moved'")
    assert re.fullmatch(
        r"\+7 runs, -7 runs in the next 7 days \(first added \S+T21:00:00\+00:00; first removed \S+T06:00:00\+00:00\)",
        moved,
    ), output


def test_plan_warns_when_a_jobs_p95_run_time_exceeds_its_interval(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    api = server.api
    owner = api.create_user(email="ops@example.com")
    slow = api.create_job(
        owner, name="Slow", job_class_string="tests.sample_jobs.slow.SlowJob", pub_kwargs={"seconds": 1.3}, **YEARLY
    )
    quick = api.create_job(owner, name="Quick", **YEARLY)
    for job_id in (slow, slow, quick):
        execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert api.wait_execution(execution_id)["status"] == "completed"
    document = export(api.base_url)
    for name in ("Slow", "Quick"):  # both to every second: only the slow one takes longer
        job_entry(document, name).update(second="*", minute="*", hour="*", day_of_month="*", month="*")

    output = plan(api.base_url, document, tmp_path)

    warnings = [line for line in output.splitlines() if "p95" in line]
    assert len(warnings) == 1, output
    assert re.fullmatch(
        r"warning: job 'Slow' of ops@example\.com's p95 run time 1\.3 s \(its last 2 successful runs\) exceeds its "
        r"interval 1 s \(the shortest gap between its runs in the next 7 days\): its runs will overlap or wait for "
        r"each other",
        warnings[0],
    ), output
    # the stored hourly definition is not the one judged: without the change, no warning
    job_entry(document, "Slow").update(YEARLY, second="0")
    assert "p95" not in plan(api.base_url, document, tmp_path)


def test_plan_leaves_out_runs_inside_the_jobs_calendar_blackouts(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data")
    api = server.api
    owner = api.create_user(email="ops@example.com")
    now = datetime.now(UTC)
    blackout = {"start": now.isoformat(), "end": (now + timedelta(hours=48)).isoformat()}
    response = api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "Freeze", "periods": [blackout]})
    assert response.status_code == 201, response.text
    calendar = response.json()["calendar_id"]
    api.create_job(owner, name="Daily", minute="0", hour="6", timezone="UTC", exclude_calendars=[calendar])
    document = export(api.base_url)
    job_entry(document, "Daily")["hour"] = "7"

    output = plan(api.base_url, document, tmp_path)

    # 7 days less the 2 of the freeze: 5 runs move from 06:00 to 07:00
    daily = runs_line(output, "update job 'Daily'")
    assert re.fullmatch(r"\+5 runs, -5 runs in the next 7 days \(first added \S+; first removed \S+\)", daily), output
    first_added = datetime.fromisoformat(re.search(r"first added (\S+);", daily)[1])
    assert first_added >= now + timedelta(hours=48)
