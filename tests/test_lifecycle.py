"""Restarts, crashes, shutdown, overlapping runs and shared databases, with real processes."""

import re
import signal
import time
from datetime import datetime, timedelta

from tests.server_process import SAMPLE_JOBS, wait_for

SLOW = "tests.sample_jobs.slow.SlowJob"


def start_run(api, job_id):
    """Run a job now and wait until it is running; returns the execution id."""
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert wait_for(lambda: api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"] == "running")
    return execution_id


def executions(api, **params):
    return api.get("/api/scheduler/executions", params={"limit": 1000, **params}).json()["data"]


def test_sqlite_data_survives_a_restart(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data")
    api = first.api
    user_id = api.create_user(name="Persistent")
    server_id = api.post(
        "/api/servers/create", json={"user_id": user_id, "name": "S", "hostname": "h", "password": "hunter2-restart"}
    ).json()["server_id"]
    job_id = api.create_job(user_id, minute="0", hour="9", day_of_week="1")
    execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    api.wait_execution(execution_id)
    before = {
        path: api.get(path).json()["data"]
        for path in (
            f"/api/users/{user_id}",
            f"/api/servers/{server_id}",
            f"/api/scheduler/jobs/{job_id}",
            f"/api/scheduler/executions/{execution_id}",
        )
    }
    assert first.stop(signal.SIGINT) == 0
    log = first.log()
    assert f"with SQLite at {tmp_path / 'data' / 'texium.db'}" in log  # the banner names the store
    assert re.search(r"POST /api/users/ 201 [0-9.]+ms", log) and "Texium stopped" in log
    assert "hunter2-restart" not in log

    second = start_server("sqlite", tmp_path / "data")
    for path, data in before.items():
        assert second.api.get(path).json()["data"] == data
    assert second.api.get(f"/api/servers/{server_id}").json()["data"]["has_password"] is True
    next_run = datetime.fromisoformat(second.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["next_run_time"])
    assert next_run.weekday() == 0 and next_run.hour == 9


def test_kill_9_during_a_run_marks_it_abandoned(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    user_id = first.api.create_user()
    job_id = first.api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 30})
    execution_id = start_run(first.api, job_id)
    first.kill()

    second = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    execution = second.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    assert execution["status"] == "abandoned"
    assert "stopped before it finished" in execution["error"] and execution["completed_at"]
    assert "abandoned" in second.log()


def test_sigterm_waits_for_running_executions(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    user_id = server.api.create_user()
    job_id = server.api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 1.5})
    execution_id = start_run(server.api, job_id)
    assert server.stop() == 0
    again = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    execution = again.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    assert execution["status"] == "completed" and "sleeping 1.5s" in execution["output"]


def test_shutdown_grace_runs_out(start_server, tmp_path):
    env = {**SAMPLE_JOBS, "TEXIUM_SHUTDOWN_GRACE_SECONDS": "0"}
    server = start_server("sqlite", tmp_path / "data", env=env)
    user_id = server.api.create_user()
    job_id = server.api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 20})
    execution_id = start_run(server.api, job_id)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 10
    again = start_server("sqlite", tmp_path / "data", env=env)
    execution = again.api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    assert execution["status"] == "abandoned" and "shut down" in execution["error"]


def test_overlapping_firings_are_recorded_as_skipped(start_server, tmp_path):
    server = start_server("mongomock", tmp_path / "data", env=SAMPLE_JOBS)
    user_id = server.api.create_user()
    job_id = server.api.create_job(
        user_id, job_class_string=SLOW, second="*/1", minute="*", pub_kwargs={"seconds": 2.5}
    )
    skipped = wait_for(lambda: executions(server.api, job_id=job_id, status="skipped"), timeout=8)
    assert skipped and "still in progress" in skipped[0]["error"]
    server.api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    assert wait_for(lambda: executions(server.api, job_id=job_id, status="completed"), timeout=8)


def test_failed_run_records_the_error(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    user_id = server.api.create_user()
    job_id = server.api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 0, "fail": True})
    bad_kwargs = server.api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"minutes": 1})
    failed = server.api.wait_execution(server.api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"])
    assert failed["status"] == "failed" and failed["error"] == "asked to fail" and "sleeping 0s" in failed["output"]
    crashed = server.api.wait_execution(server.api.post(f"/api/scheduler/jobs/{bad_kwargs}/run").json()["execution_id"])
    assert crashed["status"] == "failed" and "TypeError" in crashed["error"] and "Traceback" in crashed["error"]
    stats = server.api.get("/api/scheduler/stats", params={"user_id": user_id}).json()["stats"]
    assert stats["failed_executions"] == 2 and stats["success_rate"] == 0.0
    assert server.api.get("/api/scheduler/health").json()["status"] == "healthy"


def test_user_job_package_is_listed(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    jobs = server.api.get("/api/scheduler/available-jobs").json()["jobs"]
    slow = [job for job in jobs if job["class_string"] == SLOW]
    assert slow and slow[0]["description"] == "Sleeps, printing before and after: a stand-in for long work"


def test_two_servers_sharing_a_database_run_each_occurrence_once(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data")
    second = start_server("sqlite", tmp_path / "data")
    user_id = first.api.create_user()
    job_id = first.api.create_job(user_id, second="*/1", minute="*")
    second.api.put(f"/api/scheduler/jobs/{job_id}", json={"description": "wake the second scheduler"})
    time.sleep(3.5)
    first.api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    time.sleep(0.5)
    runs = executions(first.api, job_id=job_id)
    occurrences = [run["scheduled_at"] for run in runs]
    assert len(occurrences) >= 3 and len(occurrences) == len(set(occurrences))


def seconds_accounted_for(runs):
    """Every occurrence a job's records stand for: runs one each, missed records their range."""
    seconds = []
    for run in runs:
        first = datetime.fromisoformat(run["scheduled_at"])
        count = run["missed_count"] if run["status"] == "missed" else 1
        seconds += [first + timedelta(seconds=i) for i in range(count)]
    return sorted(seconds)


def test_downtime_is_recorded_missed_and_the_latest_occurrence_runs(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data")
    user_id = first.api.create_user()
    job_id = first.api.create_job(user_id, second="*/1", minute="*")
    wait_for(lambda: executions(first.api, job_id=job_id, status="completed"), timeout=5)
    first.stop()
    stopped_at = datetime.now().astimezone()
    time.sleep(3)
    second = start_server("sqlite", tmp_path / "data")
    restarted_at = datetime.now().astimezone()
    time.sleep(1.5)
    second.api.patch(f"/api/scheduler/jobs/{job_id}/pause")
    time.sleep(0.3)
    runs = executions(second.api, job_id=job_id)
    [missed] = [r for r in runs if r["status"] == "missed"]
    assert missed["missed_count"] >= 2 and "Missed" in missed["error"]
    caught_up = [
        r
        for r in runs
        if r["status"] == "completed" and stopped_at < datetime.fromisoformat(r["scheduled_at"]) < restarted_at
    ]
    assert len(caught_up) == 1  # one catch-up run: the latest occurrence due at start-up
    seconds = seconds_accounted_for(runs)
    assert len(seconds) == len(set(seconds))  # no occurrence both run and missed, or run twice
    assert all(b - a == timedelta(seconds=1) for a, b in zip(seconds, seconds[1:]))  # and none lost


def run_window(api, execution_id):
    data = api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
    return data["status"], datetime.fromisoformat(data["started_at"]), datetime.fromisoformat(data["completed_at"])


def test_run_now_keeps_to_the_max_instances_rule_and_waits_its_turn(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS)
    api = server.api
    job_id = api.create_job(api.create_user(), job_class_string=SLOW, pub_kwargs={"seconds": 0.6})
    ids = [api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"] for _ in range(3)]
    for execution_id in ids:
        api.wait_execution(execution_id, timeout=15)
    windows = sorted(run_window(api, execution_id) for execution_id in ids)
    assert [status for status, _, _ in windows] == ["completed"] * 3
    starts_and_ends = sorted((start, end) for _, start, end in windows)
    assert all(later[0] >= earlier[1] for earlier, later in zip(starts_and_ends, starts_and_ends[1:]))  # one at a time


def test_a_busy_pool_delays_firings_but_never_skips_them_as_running(start_server, tmp_path):
    """With one pool thread taken by a long run, another job's firings queue; none of them is
    'skipped: previous run still in progress', since none of its runs had started."""
    server = start_server("sqlite", tmp_path / "data", env={**SAMPLE_JOBS, "TEXIUM_THREAD_POOL_SIZE": "1"})
    api = server.api
    user_id = api.create_user()
    slow_id = api.create_job(user_id, job_class_string=SLOW, pub_kwargs={"seconds": 2.5})
    start_run(api, slow_id)
    tick_id = api.create_job(user_id, second="*/1", minute="*")
    time.sleep(6)  # the pool is free for the last 3.5 s of it (4 s was too tight on a loaded CI machine)
    api.patch(f"/api/scheduler/jobs/{tick_id}/pause")
    time.sleep(1)
    runs = executions(api, job_id=tick_id)
    busy = [r for r in runs if r["status"] == "skipped" and "still in progress" in r["error"]]
    assert runs and not busy, [(r["status"], r["error"]) for r in runs]
    assert len([r for r in runs if r["status"] == "completed"]) >= 3, [(r["status"], r["error"][:80]) for r in runs]
