"""One user cannot take every worker of a node, and a node whose workers are all busy says so.

Issue 20, item 8: eight webhook jobs aimed at a host that never answers held all eight job
threads; an admin's run-now stayed `scheduled` and health said healthy."""

from tests.server_process import SAMPLE_JOBS, wait_for
from tests.test_lifecycle import SLOW, start_run

QUICK_STOP = {"TEXIUM_SHUTDOWN_GRACE_SECONDS": "1"}  # the servers stop with runs still going


def status(api, execution_id):
    return api.get(f"/api/scheduler/executions/{execution_id}").json()["data"]["status"]


def test_one_users_runs_leave_a_worker_for_the_others(start_server, tmp_path):
    """Four workers, so one user's runs may hold three (the default: three quarters)."""
    server = start_server(
        "sqlite", tmp_path / "data", env={**SAMPLE_JOBS, **QUICK_STOP, "TEXIUM_THREAD_POOL_SIZE": "4"}
    )
    api = server.api
    hog = api.create_user(name="Hog")
    hog_jobs = [api.create_job(hog, job_class_string=SLOW, pub_kwargs={"seconds": 4}) for _ in range(4)]
    first = [start_run(api, job_id) for job_id in hog_jobs[:3]]
    fourth = api.post(f"/api/scheduler/jobs/{hog_jobs[3]}/run").json()["execution_id"]

    other = api.create_job(api.create_user(name="Other"), job_class_string=SLOW, pub_kwargs={"seconds": 0.1})
    theirs = api.post(f"/api/scheduler/jobs/{other}/run").json()["execution_id"]
    assert wait_for(lambda: status(api, theirs) == "completed", timeout=2.5), status(api, theirs)
    assert status(api, fourth) == "scheduled"  # the hog's fourth run waits for one of its own
    assert [status(api, e) for e in first] == ["running"] * 3
    # once one of the hog's runs ends, its fourth takes the worker
    assert wait_for(lambda: status(api, fourth) in ("running", "completed"), timeout=10), status(api, fourth)


def test_health_warns_then_fails_while_a_due_run_waits_for_a_worker(start_server, tmp_path):
    env = {
        **SAMPLE_JOBS,
        **QUICK_STOP,
        "TEXIUM_THREAD_POOL_SIZE": "1",
        "TEXIUM_BUSY_WARNING_SECONDS": "0.5",
        "TEXIUM_BUSY_UNHEALTHY_SECONDS": "2",
    }
    server = start_server("sqlite", tmp_path / "data", env=env)
    api = server.api
    owner = api.create_user()
    busy = api.create_job(owner, job_class_string=SLOW, pub_kwargs={"seconds": 30})
    waiting = api.create_job(owner, job_class_string=SLOW, pub_kwargs={"seconds": 0.1})
    start_run(api, busy)
    assert api.get("/api/scheduler/health").json()["warnings"] == []
    api.post(f"/api/scheduler/jobs/{waiting}/run")

    def health():
        answer = api.get("/api/scheduler/health")
        return answer.status_code, answer.json()

    code, body = wait_for(lambda: (h := health())[1]["warnings"] and h, timeout=5)
    assert code == 200 and body["status"] == "healthy"
    assert "All 1 job threads are busy" in body["warnings"][0] and "warning: All 1 job threads" in body["message"]
    code, body = wait_for(lambda: (h := health())[0] == 503 and h, timeout=5)
    assert body["status"] == "unhealthy" and "All 1 job threads are busy" in body["message"]
