"""GET /metrics reports what the store holds back (issue 21): occurrences queued under their
job's overlap policy and occurrences a calendar excluded, equal to the store's own records."""

from __future__ import annotations

import time
from datetime import datetime

from tests.server_process import SAMPLE_JOBS, wait_for
from tests.test_metrics import scrape, total

POLITE = "tests.sample_jobs.operations.PoliteJob"  # waits, and stops at once when told to
EVERY_SECOND = {"second": "*", "minute": "*"}


def records(api, job_id: str) -> list[dict]:
    return api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000}).json()["data"]


def queued_in_store(api, job_id: str) -> int:
    return sum(1 for r in records(api, job_id) if r["status"] == "scheduled" and r.get("waiting"))


def test_queued_and_excluded_gauges_equal_the_store(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env={**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"})
    api = server.api
    owner = api.create_user()
    before = scrape(api)
    assert total(before, "texium_queued_occurrences") == 0 and total(before, "texium_excluded_occurrences") == 0

    # A run lasting 30 s while the job fires every second: three occurrences wait behind it.
    busy = api.create_job(
        owner,
        **EVERY_SECOND,
        job_class_string=POLITE,
        pub_kwargs={"seconds": 30},
        overlap_policy="queue_all",
        max_queued=3,
    )
    # Every second, with seconds 0-4 of every ten blacked out: those occurrences are excluded.
    blackout = {"second": "*/10", "minute": "*", "duration_seconds": 5, "timezone": "UTC"}
    calendar = api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "busy", "recurring": [blackout]})
    assert calendar.status_code == 201, calendar.text
    blacked_out = api.create_job(owner, **EVERY_SECOND, exclude_calendars=[calendar.json()["calendar_id"]])

    assert wait_for(lambda: queued_in_store(api, busy) == 3, timeout=15)
    assert wait_for(lambda: api.get(f"/api/scheduler/jobs/{blacked_out}").json()["data"]["excluded_runs"] >= 3, 15)
    assert api.patch(f"/api/scheduler/jobs/{blacked_out}/pause").status_code == 200
    time.sleep(1)  # a pass that planned before the pause has written its count

    excluded = api.get(f"/api/scheduler/jobs/{blacked_out}").json()["data"]["excluded_runs"]
    figures = scrape(api)
    assert queued_in_store(api, busy) == 3  # still three: the run goes on for 30 s
    assert total(figures, "texium_queued_occurrences") == 3
    assert total(figures, "texium_excluded_occurrences") == excluded >= 3
    assert all(datetime.fromisoformat(r["scheduled_at"]).second % 10 >= 5 for r in records(api, blacked_out))
