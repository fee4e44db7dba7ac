"""Catch-up (issue 21): what a job's `catchup_policy` runs of the occurrences a stopped server
finds due when it starts again.

Real servers: a job is made, the server stopped, the job's `next_run_time` put 10 s back in the
store (an outage of 10 s, its end before the restart by `end_at`, so the count is exact), and
the server started again on the same data."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.server_process import SAMPLE_JOBS, wait_for
from texium.core.datastore import open_datastore
from texium.core.scheduling.catchup import CATCHUP_RUN_LIMIT
from texium.core.scheduling.planner import Planner, records_of

FAST = {**SAMPLE_JOBS, "TEXIUM_SCHEDULER_POLL_SECONDS": "1", "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2"}
EVERY_SECOND = {"second": "*", "minute": "*"}
OUTAGE = 9  # occurrences due while the server was down: T0 .. T0 + 8 s


def executions(api, job_id) -> list[dict]:
    found = api.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000}).json()["data"]
    return sorted(found, key=lambda r: r["scheduled_at"])


def after_an_outage(start_server, tmp_path, ago: int = 10, **job) -> tuple[object, str, datetime]:
    """A server whose every-second job missed OUTAGE occurrences while it was down, the first
    `ago` seconds before the restart began; (api, job id, the first occurrence missed)."""
    server = start_server("sqlite", tmp_path / "data", env=FAST)
    api = server.api
    job_id = api.create_job(api.create_user(), **EVERY_SECOND, is_enabled=False, **job)
    server.stop()
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=ago)
    store = open_datastore(None, "texium_db", str(tmp_path / "data"))
    try:
        store.jobs.update_many(
            {"_id": job_id},
            {"is_enabled": True, "next_run_time": first, "end_at": first + timedelta(seconds=OUTAGE - 1)},
        )
    finally:
        store.close()
    return start_server("sqlite", tmp_path / "data", env=FAST).api, job_id, first


def settled(api, job_id, count: int) -> list[dict]:
    """The job's records once `count` of them have ended."""
    ended = lambda: [r for r in executions(api, job_id) if r["status"] not in ("scheduled", "running")]  # noqa: E731
    return wait_for(lambda: len(ended()) >= count and ended(), timeout=30) or executions(api, job_id)


def test_latest_runs_only_the_latest_and_records_the_others_missed(start_server, tmp_path):
    api, job_id, first = after_an_outage(start_server, tmp_path)
    records = settled(api, job_id, 2)
    assert [r["status"] for r in records] == ["missed", "completed"], records
    missed, run = records
    assert missed["missed_count"] == OUTAGE - 1 and "only the latest due run" in missed["error"]
    assert datetime.fromisoformat(run["scheduled_at"]) == first + timedelta(seconds=OUTAGE - 1)
    assert run["catchup"] is False


def test_none_runs_nothing_and_records_every_occurrence_missed(start_server, tmp_path):
    # the latest occurrence is more than 5 s late too (20 - 8 s): with `none`, none of them runs
    api, job_id, first = after_an_outage(start_server, tmp_path, ago=20, catchup_policy="none")
    records = settled(api, job_id, 1)
    time.sleep(1.5)  # a run would have been claimed by now
    records = executions(api, job_id)
    assert [r["status"] for r in records] == ["missed"], records
    assert records[0]["missed_count"] == OUTAGE and "catchup_policy is none" in records[0]["error"]
    assert datetime.fromisoformat(records[0]["scheduled_at"]) == first


def test_all_runs_every_missed_occurrence_oldest_first_through_the_overlap_policy(start_server, tmp_path):
    job = {"catchup_policy": "all", "overlap_policy": "queue_all", "max_queued": 100, "max_instances": 1}
    api, job_id, first = after_an_outage(start_server, tmp_path, **job)
    records = settled(api, job_id, OUTAGE)
    assert [r["status"] for r in records] == ["completed"] * OUTAGE, [(r["status"], r["error"]) for r in records]
    assert [datetime.fromisoformat(r["scheduled_at"]) for r in records] == [
        first + timedelta(seconds=n) for n in range(OUTAGE)
    ]
    # claimed and offered oldest first: the oldest starts first; the others wait in the overlap
    # policy's queue, one at a time (max_instances 1)
    by_start = sorted(records, key=lambda r: r["started_at"])
    assert by_start[0]["scheduled_at"] == records[0]["scheduled_at"]
    assert all(b["started_at"] >= a["completed_at"] for a, b in zip(by_start, by_start[1:]))
    assert [r["catchup"] for r in records] == [True] * (OUTAGE - 1) + [False]


def test_all_runs_only_what_is_inside_the_window(start_server, tmp_path):
    job = {"catchup_policy": "all", "catchup_window_seconds": 7, "overlap_policy": "allow", "max_instances": 20}
    api, job_id, first = after_an_outage(start_server, tmp_path, **job)
    records = settled(api, job_id, 2)
    time.sleep(1.0)
    records = executions(api, job_id)
    span, others = records[0], records[1:]  # the older ones in one missed record, then one each
    assert span["status"] == "missed" and span["missed_count"] + len(others) == OUTAGE, records
    assert datetime.fromisoformat(span["missed_until"]) + timedelta(seconds=1) == datetime.fromisoformat(
        others[0]["scheduled_at"]
    )
    runs = [r for r in others if r["status"] == "completed"]
    assert runs and len(others) <= 7, records
    for run in runs:  # each started at most 7 s after its time
        late = datetime.fromisoformat(run["started_at"]) - datetime.fromisoformat(run["scheduled_at"])
        assert late <= timedelta(seconds=7), run
    # any other crossed the window's edge between its claim and its start
    assert all("catchup_window_seconds (7 s)" in r["error"] for r in [span, *others] if r not in runs)


@pytest.mark.parametrize(
    "field, value",
    [
        ("catchup_policy", "sometimes"),
        ("catchup_window_seconds", 0),
        ("catchup_window_seconds", 2678401),
        ("catchup_window_seconds", 1.5),
    ],
)
def test_a_bad_catch_up_setting_is_a_400_naming_the_field(api, field, value):
    response = api.post(
        "/api/scheduler/jobs",
        json={"user_id": api.create_user(), "job_class_string": "jobs.echo.EchoJob", "name": "x", field: value},
    )
    assert response.status_code == 400 and f"Invalid field {field}" in response.json()["detail"], response.text


def test_the_catch_up_settings_are_kept_and_shown(api):
    job_id = api.create_job(api.create_user(), catchup_policy="all", catchup_window_seconds=21600)
    job = api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]
    assert (job["catchup_policy"], job["catchup_window_seconds"]) == ("all", 21600)
    assert api.put(f"/api/scheduler/jobs/{job_id}", json={"catchup_policy": "none"}).status_code == 200
    assert api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["catchup_policy"] == "none"


def test_a_long_outage_makes_at_most_1000_catch_up_runs_the_newest_and_one_missed_record():
    """An every-second job down for three days with a one-day window: the plan (what every node
    would claim) holds the newest 1,000 occurrences; everything before them is one missed record."""
    first = datetime(2026, 1, 1, tzinfo=UTC)
    job = {"_id": "6b1710df82731343c684bb45", **EVERY_SECOND, "hour": "*", "timezone": "UTC", "next_run_time": first}
    job.update(catchup_policy="all", catchup_window_seconds=86400)
    now = first + timedelta(days=3)
    plan = Planner(misfire_grace_time=3600).plan(job, now)
    assert len(plan.runs) == CATCHUP_RUN_LIMIT and plan.catchup == CATCHUP_RUN_LIMIT - 1
    assert plan.runs == [now - timedelta(seconds=CATCHUP_RUN_LIMIT - 1 - n) for n in range(CATCHUP_RUN_LIMIT)]
    made = records_of(job, plan.claim(), None)
    missed = [r for r in made if r["status"] == "missed"]
    assert len(missed) == 1 and missed[0]["scheduled_at"] == first
    assert missed[0]["missed_until"] == plan.runs[0] - timedelta(seconds=1)
    assert "at most 1000 per pass" in missed[0]["error"]
