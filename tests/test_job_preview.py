"""`GET /api/scheduler/jobs/{id}/preview` (issue 21): a job's next runs with every rule applied,
through a real server. Its first run must be the job's `next_run_time`, whatever rules apply."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.test_dst_policy import BERLIN, BERLIN_230, mmdd, next_change, on


def preview(api, job_id: str, **params) -> dict:
    response = api.get(f"/api/scheduler/jobs/{job_id}/preview", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def job(api, job_id: str) -> dict:
    return api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]


def runnable(shown: dict) -> list[dict]:
    return [run for run in shown["runs"] if "excluded_by" not in run and run.get("dst") != "skipped"]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def test_h_jitter_and_a_calendar_all_applied_and_the_first_run_is_next_run_time(api):
    owner = api.create_user()
    now = datetime.now(UTC).replace(microsecond=0)
    freeze = {"start": iso(now - timedelta(minutes=1)), "end": iso(now + timedelta(minutes=12))}
    created = api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "Freeze", "periods": [freeze]})
    assert created.status_code == 201, created.text
    job_id = api.create_job(
        owner,
        second="H",
        minute="*/5",
        jitter_seconds=60,
        exclude_calendars=[created.json()["calendar_id"]],
    )
    shown = preview(api, job_id, count=4)
    assert shown["job_id"] == job_id and shown["reason"] is None
    assert set(shown["resolved"]) == {"second"} and shown["resolved"]["second"].isdigit()
    excluded = [run for run in shown["runs"] if "excluded_by" in run]
    runs = runnable(shown)
    assert len(runs) == 4 and excluded and all(run["excluded_by"] == "Freeze" for run in excluded)
    assert all(datetime.fromisoformat(run["scheduled_at"]) < now + timedelta(minutes=12) for run in excluded)
    assert datetime.fromisoformat(runs[0]["scheduled_at"]) >= now + timedelta(minutes=12)
    assert datetime.fromisoformat(runs[0]["scheduled_at"]) == datetime.fromisoformat(job(api, job_id)["next_run_time"])
    second = int(shown["resolved"]["second"])
    for run in shown["runs"]:  # each time is the resolved `H` second of a 5-minute mark plus its delay
        at = datetime.fromisoformat(run["scheduled_at"])
        assert 0 <= run["delay_seconds"] <= 60
        origin = at - timedelta(seconds=run["delay_seconds"])
        assert origin.minute % 5 == 0 and origin.second == second
    assert len({run["delay_seconds"] for run in shown["runs"]}) > 1  # derived per occurrence
    assert preview(api, job_id, count=4) == shown  # the same plan every time


def test_a_dst_change_is_flagged_on_the_runs_it_shapes(api):
    owner, spring = api.create_user(), next_change(forward=True)
    zone = ZoneInfo(BERLIN)
    default = api.create_job(owner, **BERLIN_230, **on(spring))
    shown = preview(api, default, count=1)
    assert shown["dst_policy"] == {"spring_forward": "at_change", "fall_back": "once"}
    [run] = shown["runs"]
    assert run["dst"] == "at_change" and "02:30:00 does not exist" in run["dst_note"]
    assert datetime.fromisoformat(run["local_time"]).astimezone(zone).strftime("%m-%d %H:%M%z") == mmdd(
        spring, "03:00+0200"
    )
    assert run["scheduled_at"] == job(api, default)["next_run_time"]

    skipping = api.create_job(owner, **BERLIN_230, **on(spring), dst_policy={"spring_forward": "skip"})
    skipped, following = preview(api, skipping, count=1)["runs"]
    assert skipped["dst"] == "skipped" and skipped["scheduled_at"] is None
    assert skipped["wall_time"] == f"{spring:%Y-%m-%d}T02:30:00"
    assert "dst" not in following and following["scheduled_at"] == job(api, skipping)["next_run_time"]
    assert datetime.fromisoformat(following["scheduled_at"]).year == spring.year + 1

    fall = next_change(forward=False)
    twice = api.create_job(owner, **BERLIN_230, **on(fall), dst_policy={"fall_back": "twice"})
    first, second = preview(api, twice, count=2)["runs"]
    assert (first["dst"], second["dst"]) == ("first copy", "second copy")
    assert (first["local_time"][-6:], second["local_time"][-6:]) == ("+02:00", "+01:00")
    once = {"fall_back": "once"}
    every_half_hour = api.create_job(owner, minute="*/30", **on(fall), timezone=BERLIN, dst_policy=once)
    runs = preview(api, every_half_hour, count=8)["runs"]
    flags = [(run["local_time"][11:16], run.get("dst")) for run in runs]
    assert ("02:00", "first copy") in flags and ("02:30", "first copy") in flags
    skipped = [run for run in runs if run.get("dst") == "skipped"]
    assert [run["local_time"][11:] for run in skipped] == ["02:00:00+01:00", "02:30:00+01:00"]
    assert all("second copy is skipped" in run["dst_note"] for run in skipped)


def test_max_runs_end_at_and_a_paused_job(api):
    owner = api.create_user()
    limited = api.create_job(owner, minute="*/10", max_runs=2)
    shown = preview(api, limited, count=5)
    assert len(shown["runs"]) == 2 and shown["ends"].startswith("max_runs reached")
    now = datetime.now(UTC)
    ending = api.create_job(owner, minute="*", end_at=iso(now + timedelta(minutes=3, seconds=30)))
    shown = preview(api, ending, count=10)
    assert len(shown["runs"]) in (3, 4) and shown["ends"] == "end_at reached"

    paused = api.create_job(owner, minute="0")
    body = {"note": "vendor API down"}
    assert api.patch(f"/api/scheduler/jobs/{paused}/pause", json=body).status_code == 200
    shown = preview(api, paused)
    assert shown["runs"] == [] and shown["reason"] == "The job is paused: vendor API down"
    disabled = api.create_job(owner, minute="0", is_enabled=False)
    assert preview(api, disabled)["reason"] == "The job is disabled"


def test_count_is_checked_and_unknown_jobs_are_404(api):
    job_id = api.create_job(api.create_user(), minute="*")
    assert len(preview(api, job_id)["runs"]) == 10
    assert len(preview(api, job_id, count=1000)["runs"]) == 1000
    for bad in ("0", "1001", "ten"):
        response = api.get(f"/api/scheduler/jobs/{job_id}/preview", params={"count": bad})
        assert response.status_code == 400 and "count" in response.json()["detail"]
    missing = api.get("/api/scheduler/jobs/0123456789abcdef01234567/preview")
    assert missing.status_code == 404 and missing.json() == {"detail": "Job not found"}


@pytest.mark.parametrize("fields", [{"minute": "H/15", "hour": "H(8-17)"}, {"second": "*/20"}])
def test_the_first_run_is_next_run_time(api, fields):
    job_id = api.create_job(api.create_user(), jitter_seconds=5, **fields)
    for _ in range(3):  # an every-20-s job may fire between the reads: then read again
        before = job(api, job_id)["next_run_time"]
        first = runnable(preview(api, job_id, count=1))[0]
        if job(api, job_id)["next_run_time"] == before:
            break
    assert first["scheduled_at"] == before
