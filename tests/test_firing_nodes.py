"""The firing core's edge cases that need real server processes (issue 19's "case N"): a
shutdown with records held ahead, two nodes with one slot, a node stopped past its lease, a
busy pool, and a cancel that reaches a held run before its start. One SQLite file each."""

import os
import signal
import threading
import time
from datetime import datetime

from tests.server_process import SAMPLE_JOBS, wait_for

FLAKY = "tests.sample_jobs.operations.FlakyJob"
FAST = {**SAMPLE_JOBS, "TEXIUM_SCHEDULER_POLL_SECONDS": "1", "TEXIUM_SHUTDOWN_GRACE_SECONDS": "2"}
YEARLY = {"minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}  # only run-nows and retries


def flaky_job(api, counter, retry_delay=3.0, **fields) -> str:
    body = {
        "job_class_string": FLAKY,
        "pub_kwargs": {"counter_path": str(counter), "failures": 1},
        "retries": 1,
        "retry_delay_seconds": retry_delay,
        "retry_backoff": "fixed",
        **YEARLY,
        **fields,
    }
    return api.create_job(api.create_user(), **body)


def held_retry(api, job_id, timeout=15.0) -> dict:
    """Run the job now (its first attempt fails) and wait until a node holds its retry."""
    first = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(first, timeout=10)["status"] == "retried"

    def retry_held():
        page = api.get("/api/scheduler/executions", params={"job_id": job_id, "status": "scheduled"}).json()["data"]
        return next((e for e in page if e["node_id"] is not None and e["attempt"] == 2), None)

    retry = wait_for(retry_held, timeout=timeout)
    assert retry, "no node claimed the retry"
    return retry


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_case_1_records_held_ahead_at_a_sigterm_run_after_the_restart(start_server, tmp_path):
    counter = tmp_path / "runs"
    server = start_server("sqlite", tmp_path / "data", env=FAST)
    job_id = flaky_job(server.api, counter)
    retry = held_retry(server.api, job_id)
    assert server.stop(signal.SIGTERM) == 0
    after = start_server("sqlite", tmp_path / "data", env=FAST)
    done = after.api.wait_execution(retry["_id"], timeout=15)
    assert done["status"] == "completed", done
    assert len(lines(counter)) == 2  # the first attempt and the retry, once each


def test_case_4_two_nodes_with_one_slot_never_overlap_runs_of_a_job(start_server, tmp_path):
    env = {**FAST, "TEXIUM_JOB_MAX_INSTANCES": "1"}
    a = start_server("sqlite", tmp_path / "data", env=env)
    b = start_server("sqlite", tmp_path / "data", env=env)
    body = {"job_class_string": "tests.sample_jobs.slow.SlowJob", "pub_kwargs": {"seconds": 0.5}, **YEARLY}
    job_id = a.api.create_job(a.api.create_user(), **body)
    answers = []
    start = threading.Barrier(6)

    def run_now(server):
        start.wait()
        answers.append(server.api.post(f"/api/scheduler/jobs/{job_id}/run").json())

    threads = [threading.Thread(target=run_now, args=(server,)) for server in (a, b) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = [a.api.wait_execution(answer["execution_id"], timeout=30) for answer in answers]
    assert [run["status"] for run in runs] == ["completed"] * 6, runs
    spans = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["completed_at"])) for r in runs)
    overlaps = [(one, two) for one, two in zip(spans, spans[1:]) if two[0] < one[1]]
    assert overlaps == [], overlaps  # one at a time, whichever node took it


def test_case_6_a_node_stopped_past_its_lease_never_runs_its_retry_again(start_server, tmp_path):
    env = {**FAST, "TEXIUM_HEARTBEAT_SECONDS": "0.5", "TEXIUM_NODE_TIMEOUT_SECONDS": "2"}
    counter = tmp_path / "runs"
    sleeper = start_server("sqlite", tmp_path / "data", env=env)
    job_id = flaky_job(sleeper.api, counter, retry_delay=4.0)
    retry = held_retry(sleeper.api, job_id)
    os.kill(sleeper.process.pid, signal.SIGSTOP)
    try:
        survivor = start_server("sqlite", tmp_path / "data", env=env)
        done = survivor.api.wait_execution(retry["_id"], timeout=20)
        assert done["status"] == "completed" and done["node_id"] != retry["node_id"], done
        time.sleep(1.0)
    finally:
        os.kill(sleeper.process.pid, signal.SIGCONT)
    time.sleep(3.0)  # it wakes: its queue, its timer and its recorder must all be refused
    assert len(lines(counter)) == 2
    assert survivor.api.get(f"/api/scheduler/executions/{retry['_id']}").json()["data"]["status"] == "completed"
    nodes = survivor.api.get("/api/scheduler/nodes").json()["data"]
    mine = [n for n in nodes if n["pid"] == sleeper.process.pid]
    assert {n["state"] for n in mine} == {"dead", "alive"}, mine  # buried, then rejoined under a new id
    assert "rejoined" in sleeper.log()


def test_case_13_cancel_of_a_held_retry_answers_cancelled_and_it_never_starts(start_server, tmp_path):
    counter = tmp_path / "runs"
    server = start_server("sqlite", tmp_path / "data", env=FAST)
    job_id = flaky_job(server.api, counter, retry_delay=3.0)
    retry = held_retry(server.api, job_id)
    answer = server.api.post(f"/api/scheduler/executions/{retry['_id']}/cancel")
    assert answer.status_code == 200, answer.text
    time.sleep(3.5)
    assert server.api.get(f"/api/scheduler/executions/{retry['_id']}").json()["data"]["status"] == "cancelled"
    assert len(lines(counter)) == 1  # only the first attempt ever started


def test_case_14_a_busy_pool_records_stale_occurrences_missed_instead_of_running_them_late(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env={**FAST, "TEXIUM_THREAD_POOL_SIZE": "1"})
    api = server.api
    user = api.create_user()
    slow = api.create_job(user, job_class_string="tests.sample_jobs.slow.SlowJob", pub_kwargs={"seconds": 5}, **YEARLY)
    ticking = api.create_job(user, second="*", minute="*")
    blocker = api.post(f"/api/scheduler/jobs/{slow}/run").json()["execution_id"]
    assert api.wait_execution(blocker, timeout=20)["status"] == "completed"
    time.sleep(2.0)
    api.patch(f"/api/scheduler/jobs/{ticking}/pause")
    runs = api.get("/api/scheduler/executions", params={"job_id": ticking, "limit": 100}).json()["data"]
    late = [
        run
        for run in runs
        if run["started_at"]
        and (datetime.fromisoformat(run["started_at"]) - datetime.fromisoformat(run["scheduled_at"])).total_seconds()
        > 1.5
    ]
    assert late == [], late  # none ran stale, back to back after the blocker
    assert any(run["status"] == "missed" for run in runs), [run["status"] for run in runs]
